"""dataset=image_folder (src/data/image_folder.py): the ImageFolder layout read into a uint8
cache once, its fingerprint, every bad input as one line that writes nothing, two processes
caching at once, and a streamed split that gives the batches a resident one gives."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.data import image_folder as folder_module
from src.data.image_folder import ImageFolderError, image_folder
from src.data.loader import DeviceData
from src.data.sources import DatasetNotFoundError
from tests.helpers.datafiles import write_image_folder


def read(root: Path, cache: Path, **settings) -> object:
    return image_folder(root=str(root), cache_dir=str(cache), **{"val_size": 6, **settings})


def test_the_folder_is_read_with_imagefolders_classes_and_cached_once(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "images", {"train": 8, "test": 2})
    raw = read(root, tmp_path / "cache")
    assert raw.num_classes == 3 and raw.input_shape == (3, 12, 12)
    assert len(raw.train_y) == 24 - 6 and len(raw.val_y) == 6 and len(raw.test_y) == 6
    assert raw.train_x.dtype == torch.uint8
    # the pixels are the files' (a PNG exactly; class c is brighter than c - 1)
    png = np.asarray(Image.open(root / "test/class2/1.png").convert("RGB")).transpose(2, 0, 1)
    assert torch.equal(raw.test_x[5], torch.from_numpy(png))
    assert raw.test_y.tolist() == [0, 0, 1, 1, 2, 2]
    means = [raw.train_x[raw.train_y == c].float().mean() for c in range(3)]
    assert means[0] < means[1] < means[2]
    # the second read maps the cache and decodes nothing
    monkeypatch.setattr(folder_module, "_decode", lambda *a: pytest.fail("decoded again"))
    again = read(root, tmp_path / "cache")
    assert again.fingerprint == raw.fingerprint and torch.equal(again.train_x, raw.train_x)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"image_folder-{raw.fingerprint}"]


def test_a_val_folder_is_the_validation_split_and_also_the_test_split_without_test(tmp_path):
    root = write_image_folder(tmp_path / "images", {"train": 4, "val": 2})
    raw = read(root, tmp_path / "cache")
    assert len(raw.train_y) == 12 and len(raw.val_y) == 6
    assert torch.equal(raw.test_x, raw.val_x)


def test_the_fingerprint_follows_the_file_list_and_sizes(tmp_path):
    root = write_image_folder(tmp_path / "images", {"train": 4, "test": 1})
    first = read(root, tmp_path / "cache").fingerprint
    os.utime(root / "train/class0/0.jpg", (0, 0))  # touched, not changed
    assert read(root, tmp_path / "cache").fingerprint == first
    assert read(root, tmp_path / "cache", image_size=8).fingerprint != first
    Image.new("RGB", (12, 12)).save(root / "train/class1/new.png")
    assert read(root, tmp_path / "cache").fingerprint != first


def corrupt(root: Path) -> str:
    (root / "train/class1/1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return "1.png is not a readable image"


def mixed(root: Path) -> str:
    Image.new("RGB", (20, 16)).save(root / "train/class2/9.png")
    return "9.png is 20x16, but .* is 12x12: set dataset.image_size=<pixels>"


def stranger(root: Path) -> str:
    (root / "train/class0/notes.txt").write_text("a note")
    return r"notes.txt is not an image \(.jpg.*\): move it out of"


def empty_class(root: Path) -> str:
    (root / "train/class3").mkdir()
    return "class3 holds no images: add some, or remove the class folder"


def no_classes(root: Path) -> str:
    for p in sorted(root.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (root / "train").mkdir()
    return "holds no class folders: put each class's images in train/<class>/"


def unknown_class(root: Path) -> str:
    (root / "test/cat").mkdir()
    Image.new("RGB", (12, 12)).save(root / "test/cat/0.png")
    return "cat is a class that train/ lacks"


@pytest.mark.parametrize("spoil", [corrupt, mixed, stranger, empty_class, no_classes,
                                   unknown_class])
def test_bad_input_is_one_line_naming_the_file_and_writes_nothing(spoil, tmp_path):
    root = write_image_folder(tmp_path / "images", {"train": 4, "test": 1})
    says = spoil(root)
    with pytest.raises(ImageFolderError, match=says) as e:
        read(root, tmp_path / "cache")
    assert "\n" not in str(e.value)
    assert not any((tmp_path / "cache").glob("*")) if (tmp_path / "cache").exists() else True


def test_mixed_sizes_are_read_with_image_size(tmp_path):
    root = write_image_folder(tmp_path / "images", {"train": 4, "test": 1})
    mixed(root)
    raw = read(root, tmp_path / "cache", image_size=[8, 10])
    assert raw.input_shape == (3, 8, 10)


def test_a_missing_folder_is_the_not_found_line(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="has no train/ folder"):
        read(tmp_path / "nowhere", tmp_path / "cache")
    with pytest.raises(DatasetNotFoundError, match=r"needs dataset\.root=<folder"):
        image_folder(root=None, cache_dir=str(tmp_path / "cache"))


def _read_in_another_process(root: str, cache: str, out) -> None:
    out.put(image_folder(root=root, cache_dir=cache, val_size=6).fingerprint)


def test_two_processes_caching_one_folder_at_once_both_read_it(tmp_path):
    root = write_image_folder(tmp_path / "images", {"train": 30, "test": 2})
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_read_in_another_process,
                         args=(str(root), str(tmp_path / "cache"), out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    digests = {out.get(timeout=5), out.get(timeout=5)}
    assert len(digests) == 1
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"image_folder-{digests.pop()}"]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_streamed_split_gives_the_batches_a_resident_one_gives(tmp_path, workers):
    root = write_image_folder(tmp_path / "images", {"train": 12, "test": 1})
    raw = read(root, tmp_path / "cache")
    settings = dict(mean=raw.mean, std=raw.std, batch_size=5, shuffle=True, drop_last=True,
                    crop_padding=2, flip=True)
    resident = DeviceData(raw.train_x.clone(), raw.train_y, **settings)
    streamed = DeviceData(raw.train_x, raw.train_y, **settings, stream=raw.files["train"],
                          stream_workers=workers)
    for epoch in range(2):
        got = list(streamed.batches(torch.Generator().manual_seed(epoch)))
        want = list(resident.batches(torch.Generator().manual_seed(epoch)))
        assert len(got) == len(want) == len(raw.train_y) // 5
        for (gx, gy), (wx, wy) in zip(got, want, strict=True):
            assert torch.equal(gx, wx) and torch.equal(gy, wy)
