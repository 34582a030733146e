"""Tests for src.data: on-disk formats, error messages, splits and device-side batching."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.core.files import CONF
from src.data import sources
from src.data.loader import DeviceData, split_train_val, subset
from src.data.sources import DatasetFileError, DatasetNotFoundError, RawData
from tests.helpers.datafiles import write_cifar10, write_cifar100, write_mnist_tree, write_pickle

DATASET_CONF = CONF / "dataset"
DATASETS = ["digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "fake"]


def _cfg(name: str, data_dir: Path):
    """Compose a dataset config the way the top-level config does (it defines data_dir)."""
    return OmegaConf.create(
        {"data_dir": str(data_dir), "dataset": OmegaConf.load(DATASET_CONF / f"{name}.yaml")}
    )


def _load(name: str, data_dir: Path, download: bool = False) -> RawData:
    cfg = _cfg(name, data_dir)
    if download:
        cfg.dataset.download = True
    return instantiate(cfg.dataset.source)


# ---------------------------------------------------------------- sources


def test_configs_have_runner_keys():
    for name in DATASETS:
        cfg = _cfg(name, Path("/data"))
        ds = cfg.dataset
        assert ds.name == name
        assert ds.source._target_ == f"src.data.sources.{name}"
        assert {"val_size", "split_seed", "augment", "train_limit", "eval_limit"} <= set(ds)
        assert set(ds.augment) == {"crop_padding", "flip"}
        if "root" in ds.source:
            assert ds.source.root == "/data"
            assert ds.source.download is False


def test_cifar10_round_trip(tmp_path):
    written = write_cifar10(tmp_path)
    data = _load("cifar10", tmp_path)
    assert data.train_x.shape == (15, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.test_x.shape == (3, 3, 32, 32)
    assert data.train_y.dtype == torch.int64 and data.test_y.dtype == torch.int64
    assert data.num_classes == 10 and data.input_shape == (3, 32, 32)
    # Sample 4 is the second image of data_batch_2; the row is CHW: 1024 red, green, blue.
    row = written["data_batch_2"][b"data"][1]
    c, h, w = 2, 5, 30
    assert data.train_x[4, c, h, w].item() == row[c * 1024 + h * 32 + w]
    assert torch.equal(data.train_x[4].flatten(), torch.from_numpy(row))
    assert data.train_y[4].item() == written["data_batch_2"][b"labels"][1]
    assert data.test_y.tolist() == written["test_batch"][b"labels"]
    assert torch.equal(
        data.test_x[2].flatten(), torch.from_numpy(written["test_batch"][b"data"][2])
    )
    assert data.mean == pytest.approx((0.4914 * 255, 0.4822 * 255, 0.4465 * 255))


def test_cifar100_round_trip(tmp_path):
    written = write_cifar100(tmp_path)
    data = _load("cifar100", tmp_path)
    assert data.train_x.shape == (5, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.test_x.shape == (2, 3, 32, 32)
    assert data.num_classes == 100
    assert data.train_y.tolist() == written["train"][b"fine_labels"]
    assert data.test_y.tolist() == written["test"][b"fine_labels"]
    row = written["train"][b"data"][3]
    assert data.train_x[3, 1, 31, 0].item() == row[1 * 1024 + 31 * 32 + 0]
    assert torch.equal(data.train_x[3].flatten(), torch.from_numpy(row))


@pytest.mark.parametrize(
    ("name", "folder", "mean"),
    [("mnist", "MNIST", 0.1307), ("fashion_mnist", "FashionMNIST", 0.2860)],
)
def test_idx_datasets_parse(tmp_path, name, folder, mean):
    arrays = write_mnist_tree(tmp_path, folder)
    data = _load(name, tmp_path)
    assert data.train_x.shape == (6, 1, 28, 28) and data.train_x.dtype == torch.uint8
    assert data.test_x.shape == (3, 1, 28, 28)
    assert data.train_y.dtype == torch.int64
    assert data.train_x[0, 0, 3, 17].item() == 201
    assert torch.equal(data.train_x[:, 0], torch.from_numpy(arrays["train_x"]))
    assert torch.equal(data.test_x[:, 0], torch.from_numpy(arrays["test_x"]))
    assert data.train_y.tolist() == arrays["train_y"].tolist()
    assert data.test_y.tolist() == arrays["test_y"].tolist()
    assert data.mean == pytest.approx((mean * 255,))


def gzip_idx_files(raw: Path, into: Path) -> dict[str, str]:
    """Replace the idx files of `raw` by their .gz in `into`; the .gz files' md5s by name."""
    into.mkdir(parents=True, exist_ok=True)
    md5s = {}
    for path in sorted(raw.glob("*-ubyte")):
        gz = into / f"{path.name}.gz"
        gz.write_bytes(gzip.compress(path.read_bytes(), mtime=0))
        md5s[gz.name] = hashlib.md5(gz.read_bytes()).hexdigest()
        path.unlink()
    return md5s


@pytest.mark.parametrize("where", ["MNIST/raw", "MNIST", "."])
def test_only_the_official_gz_files_are_decompressed_without_the_network(
        tmp_path, monkeypatch, caplog, where):
    arrays = write_mnist_tree(tmp_path, "MNIST")
    md5s = gzip_idx_files(tmp_path / "MNIST" / "raw", tmp_path / where)

    def offline(self):
        raise AssertionError("the .gz files are there: no download")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    # Published checksums that match these files: decompressed without a word.
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", list(md5s.items()))
    with caplog.at_level("WARNING"):
        data = sources.mnist(root=str(tmp_path), download=True, checksums="strict")
    assert torch.equal(data.train_x[:, 0], torch.from_numpy(arrays["train_x"]))
    assert data.test_y.tolist() == arrays["test_y"].tolist()
    assert sorted(p.name for p in (tmp_path / "MNIST" / "raw").glob("*-ubyte")) == sorted(
        n.removesuffix(".gz") for n in md5s)
    assert not caplog.records


def test_gz_files_that_differ_from_the_published_ones_warn_or_are_refused(tmp_path, caplog):
    write_mnist_tree(tmp_path, "MNIST")
    gzip_idx_files(tmp_path / "MNIST" / "raw", tmp_path / "MNIST" / "raw")
    with pytest.raises(DatasetFileError, match="differs from the published mnist file") as info:
        sources.mnist(root=str(tmp_path), checksums="strict")
    assert "\n" not in str(info.value) and "dataset.checksums=warn" in str(info.value)
    assert not list((tmp_path / "MNIST" / "raw").glob("*-ubyte"))  # nothing decompressed
    with caplog.at_level("WARNING"):
        data = sources.mnist(root=str(tmp_path))  # checksums=warn: read, and said
    assert data.train_x.shape == (6, 1, 28, 28)
    assert any("differs from the published" in r.getMessage() for r in caplog.records)


def test_a_truncated_gz_is_one_line_and_leaves_no_partial_file(tmp_path):
    write_mnist_tree(tmp_path, "MNIST")
    raw = tmp_path / "MNIST" / "raw"
    gzip_idx_files(raw, raw)
    gz = raw / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:40])
    with pytest.raises(DatasetFileError, match="truncated or damaged") as info:
        sources.mnist(root=str(tmp_path), checksums="off")
    assert str(gz) in str(info.value)
    assert not (raw / "train-images-idx3-ubyte").exists()
    assert not [p for p in raw.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("name", "folder"),
    [
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
        ("mnist", "MNIST/raw"),
        ("fashion_mnist", "FashionMNIST/raw"),
    ],
)
def test_missing_files_raise_one_line(tmp_path, name, folder):
    # Called directly: through hydra.utils.instantiate the error arrives wrapped in an
    # InstantiationException (as its __cause__).
    with pytest.raises(DatasetNotFoundError) as info:
        getattr(sources, name)(root=str(tmp_path))
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "\n" not in msg
    assert name in msg and str(tmp_path / folder) in msg and "dataset.download=true" in msg


def test_download_failures_raise_one_line(tmp_path, monkeypatch):
    class OfflineCIFAR10(torchvision.datasets.CIFAR10):
        def __init__(self, *args, **kwargs):
            raise URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", OfflineCIFAR10)
    with pytest.raises(DatasetNotFoundError, match="download failed") as info:
        sources.cifar10(root=str(tmp_path), download=True)
    assert "\n" not in str(info.value) and "no network" in str(info.value)

    def offline_download(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried mirror, got:\n...")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline_download)
    with pytest.raises(DatasetNotFoundError, match="download failed") as info:
        sources.mnist(root=str(tmp_path), download=True)
    assert "\n" not in str(info.value) and "Error downloading" in str(info.value)


def test_download_skipped_when_files_present(tmp_path, monkeypatch):
    write_cifar10(tmp_path)

    class NoDownload(torchvision.datasets.CIFAR10):
        def __init__(self, *args, **kwargs):
            raise AssertionError("must not download when the files are there")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", NoDownload)
    assert _load("cifar10", tmp_path, download=True).train_x.shape[0] == 15


def test_digits_split_is_fixed_by_split_seed():
    a = _load("digits", Path("/unused"))
    assert a.train_x.shape[0] + a.test_x.shape[0] == 1797
    assert a.test_x.shape[0] == round(0.2 * 1797)
    assert a.train_x.dtype == torch.float32 and a.input_shape == (1, 8, 8)
    assert a.train_x.max().item() == 16.0 and a.train_x.min().item() == 0.0
    assert a.mean == pytest.approx((a.train_x.mean().item(),), rel=1e-5)
    b = sources.digits(split_seed=0)
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.test_y, b.test_y)
    c = sources.digits(split_seed=1)
    assert not torch.equal(a.test_x, c.test_x)
    # A split is a partition: train and test together hold every digit exactly once.
    assert torch.equal(
        torch.bincount(torch.cat([a.train_y, a.test_y])),
        torch.bincount(torch.cat([c.train_y, c.test_y])),
    )


def test_fake_is_deterministic_and_learnable():
    kwargs = dict(num_train=300, num_test=100, num_classes=5, shape=(3, 8, 8), seed=3)
    a, b = sources.fake(**kwargs), sources.fake(**kwargs)
    assert a.train_x.shape == (300, 3, 8, 8) and a.train_x.dtype == torch.float32
    assert a.test_y.dtype == torch.int64 and a.num_classes == 5
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, sources.fake(**{**kwargs, "seed": 4}).train_x)
    assert a.mean == pytest.approx(tuple(a.train_x.mean(dim=(0, 2, 3)).tolist()), abs=1e-5)
    # Nearest class mean (estimated on train) classifies the test set almost perfectly.
    centroids = torch.stack([a.train_x[a.train_y == c].mean(0) for c in range(5)]).flatten(1)
    pred = torch.cdist(a.test_x.flatten(1), centroids).argmin(1)
    assert (pred == a.test_y).float().mean().item() > 0.9


def test_fake_config_instantiates_with_overrides():
    cfg = _cfg("fake", Path("/unused"))
    data = instantiate(cfg.dataset.source, num_train=20, num_test=10)
    assert data.input_shape == (3, 32, 32) and data.test_x.shape[0] == 10


# ---------------------------------------------------------------- loader


def _indexed(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x whose every value is the sample index, so batches reveal which samples they hold."""
    y = torch.arange(n)
    return y.float().view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous(), y


def test_split_train_val_deterministic_and_disjoint():
    x, y = _indexed(100)
    a = split_train_val(x, y, val_size=20, split_seed=7)
    b = split_train_val(x, y, val_size=20, split_seed=7)
    assert all(torch.equal(s, t) for s, t in zip(a, b, strict=True))
    _, y_tr, x_val, y_val = a
    assert len(y_tr) == 80 and len(y_val) == 20
    assert set(y_tr.tolist()).isdisjoint(y_val.tolist())
    assert sorted(y_tr.tolist() + y_val.tolist()) == list(range(100))
    assert torch.equal(x_val[:, 0, 0, 0].long(), y_val)  # x and y stay paired
    assert not torch.equal(split_train_val(x, y, 20, split_seed=8)[3], y_val)
    empty = split_train_val(x, y, val_size=0, split_seed=7)
    assert empty[2].shape == (0, 1, 2, 2) and empty[3].shape == (0,) and len(empty[1]) == 100


def test_subset():
    x, y = _indexed(10)
    xs, ys = subset(x, y, 4)
    assert ys.tolist() == [0, 1, 2, 3] and xs.shape[0] == 4
    assert subset(x, y, None)[1] is y


def test_batches_cover_every_sample_once():
    x, y = _indexed(50)
    data = DeviceData(x, y, (0.0,), (1.0,), batch_size=7, shuffle=True, drop_last=False)
    assert len(data) == 8 and data.num_samples == 50
    batches = list(data.batches(torch.Generator().manual_seed(0)))
    assert len(batches) == 8
    xs = torch.cat([b[0] for b in batches])
    ys = torch.cat([b[1] for b in batches])
    assert sorted(ys.tolist()) == list(range(50))
    assert ys.tolist() != list(range(50))  # shuffled
    assert torch.equal(xs[:, 0, 0, 0].long(), ys) and xs.dtype == torch.float32
    dropped = DeviceData(x, y, (0.0,), (1.0,), batch_size=7, shuffle=True, drop_last=True)
    assert len(dropped) == 7
    assert [len(b[1]) for b in dropped.batches(torch.Generator().manual_seed(0))] == [7] * 7


def test_eval_batches_keep_order():
    x, y = _indexed(10)
    data = DeviceData(x, y, (0.0,), (1.0,), batch_size=4, shuffle=False, drop_last=False)
    assert [b[1].tolist() for b in data.batches(None)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_same_generator_seed_same_batches():
    x = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(40)
    data = DeviceData(
        x, y, (1.0,) * 3, (2.0,) * 3, 16, shuffle=True, drop_last=False, crop_padding=2, flip=True
    )

    def run(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(data.batches(torch.Generator().manual_seed(seed)))

    a, b, c = run(5), run(5), run(6)
    assert all(
        torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b, strict=True)
    )
    assert not torch.equal(a[0][1], c[0][1])


def test_normalisation_zero_mean_unit_std():
    gen = torch.Generator().manual_seed(0)
    x = (
        torch.rand(500, 3, 4, 4, generator=gen)
        * torch.tensor([50.0, 120.0, 200.0]).view(1, 3, 1, 1)
    ).to(torch.uint8)
    std, mean = torch.std_mean(x.float(), dim=(0, 2, 3))
    data = DeviceData(
        x,
        torch.zeros(500, dtype=torch.long),
        tuple(mean.tolist()),
        tuple(std.tolist()),
        64,
        False,
        False,
    )
    xs = torch.cat([b[0] for b in data.batches(None)])
    assert xs.mean(dim=(0, 2, 3)).abs().max().item() < 1e-4
    assert (xs.std(dim=(0, 2, 3)) - 1).abs().max().item() < 1e-3


def test_random_crop_matches_padded_reference():
    n, p = 32, 4
    x = torch.randint(1, 256, (n, 3, 10, 12), dtype=torch.uint8)  # nonzero, so padding shows
    data = DeviceData(
        x,
        torch.arange(n),
        (0.0,) * 3,
        (1.0,) * 3,
        n,
        shuffle=False,
        drop_last=False,
        crop_padding=p,
    )
    ((out, _),) = list(data.batches(torch.Generator().manual_seed(11)))
    # The loader draws (top, left) offsets in [0, 2p] as one (B, 2) tensor from the generator.
    offsets = torch.randint(0, 2 * p + 1, (n, 2), generator=torch.Generator().manual_seed(11))
    for i in range(n):
        top, left = offsets[i].tolist()
        ref = F.pad(x[i], (p, p, p, p))[:, top : top + 10, left : left + 12]
        assert torch.equal(out[i], ref.float())
    assert (out == 0).any()  # some crops reach into the zero padding
    assert len({tuple(o) for o in offsets.tolist()}) > 1


def test_flip_changes_about_half():
    n = 1000
    x = torch.randint(0, 256, (n, 1, 4, 5), dtype=torch.uint8)
    data = DeviceData(
        x, torch.arange(n), (0.0,), (1.0,), 250, shuffle=False, drop_last=False, flip=True
    )
    out = torch.cat([b[0] for b in data.batches(torch.Generator().manual_seed(0))])
    same = (out == x.float()).flatten(1).all(1)
    mirrored = (out == x.flip(3).float()).flatten(1).all(1)
    assert (same | mirrored).all()  # each sample is either untouched or mirrored
    assert 0.4 < mirrored.float().mean().item() < 0.6


def test_cifar_files_pickled_by_python3_with_str_keys_load_too(tmp_path):
    written = write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    for name, batch in written.items():  # rewrite with str keys, as Python 3 tools write them
        write_pickle(folder / name, {k.decode(): v for k, v in batch.items()})
    data = sources.cifar10(root=str(tmp_path))
    assert data.train_x.shape == (15, 3, 32, 32)
    assert torch.equal(data.train_x[0].flatten(),
                       torch.from_numpy(written["data_batch_1"][b"data"][0]))


def test_batches_of_several_runs_assembled_together_are_each_runs_own():
    """Stacked runs draw their batches from their own generators and build them in one go:
    the same numbers as each batch built alone."""
    x = torch.randint(0, 256, (40, 3, 6, 6), dtype=torch.uint8)
    data = DeviceData(x, torch.arange(40), (100.0, 90.0, 80.0), (50.0, 60.0, 70.0), 8,
                      shuffle=True, drop_last=True, crop_padding=2, flip=True)
    no_crop = DeviceData(x, torch.arange(40), (100.0, 90.0, 80.0), (50.0, 60.0, 70.0), 8,
                         shuffle=True, drop_last=True, flip=True)
    for source in (data, no_crop):  # no crop: gathered from a normalised copy, into buffers
        alone = [list(source.batches(torch.Generator().manual_seed(s))) for s in (1, 2, 3)]
        draws = [list(source.draws(torch.Generator().manual_seed(s))) for s in (1, 2, 3)]
        out = (torch.empty(24, 3, 6, 6), torch.empty(24, dtype=torch.int64))
        for step in range(len(source)):
            for xs, ys in (source.assemble([d[step] for d in draws]),
                           source.assemble([d[step] for d in draws], out=out)):
                assert torch.equal(xs, torch.cat([a[step][0] for a in alone]))
                assert torch.equal(ys, torch.cat([a[step][1] for a in alone]))


def test_the_bundled_digits_are_what_scikit_learn_loads():
    from sklearn.datasets import load_digits

    from src.data.sources import bundled_digits

    images, target = bundled_digits()
    bunch = load_digits()
    assert np.array_equal(images, bunch.images) and images.dtype == bunch.images.dtype
    assert np.array_equal(target, bunch.target)
