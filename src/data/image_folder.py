"""`dataset=image_folder`: torchvision's ImageFolder layout, decoded once into a uint8 cache.

    <root>/train/<class>/<image>.png|.jpg|.jpeg|...   required
    <root>/val/<class>/...                            optional: the validation split
    <root>/test/<class>/...                           optional: the test split

Classes are the sorted subfolders of train/ (as ImageFolder numbers them). Without val/, the
validation split is carved from train/ with `split_seed`, as for every dataset; without test/,
val/ is also the test split. The first read decodes every image (converted to RGB, resized to
`image_size` if given) into (N, 3, H, W) uint8 .npy files under `<cache_dir>/<digest>/`, written
atomically; later reads memory-map them. The digest covers the folder's file list and sizes and
the settings that shape the cache, and is the dataset's fingerprint: a run records it, and
refuses to resume on a folder that changed.

Bad input is one line naming the file and the fix, and nothing is written: an empty folder, a
class folder without images, a file that is not an image, a corrupt image, images of mixed sizes
without `image_size`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from src.core.errors import UserError
from src.data.sources import DatasetNotFoundError, RawData, reads_files

log = logging.getLogger(__name__)

# what PIL reads and ImageFolder accepts (torchvision.datasets.folder.IMG_EXTENSIONS)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")


class ImageFolderError(UserError):
    """A folder of images that cannot be read as a dataset; the message names the file."""


def _folder_missing(root: str | None = None, **_: object) -> DatasetNotFoundError | None:
    if root is None or not str(root).strip():
        return DatasetNotFoundError("dataset=image_folder needs dataset.root=<folder that "
                                    "holds train/<class>/<images>>")
    if not (Path(root) / "train").is_dir():
        return DatasetNotFoundError(f"dataset.root={root} has no train/ folder: point it at a "
                                    f"folder that holds train/<class>/<images> (and optionally "
                                    f"val/ and test/)")
    return None


def _listing(root: Path) -> dict[str, list[tuple[Path, int]]]:
    """Per split present, its (file, class index) pairs in sorted order; the classes are
    train/'s subfolders."""
    classes = sorted(p.name for p in (root / "train").iterdir()
                     if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ImageFolderError(f"{root / 'train'} holds no class folders: put each class's "
                               f"images in train/<class>/")
    out: dict[str, list[tuple[Path, int]]] = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            continue
        found = sorted(p.name for p in folder.iterdir()
                       if p.is_dir() and not p.name.startswith("."))
        strangers = [c for c in found if c not in classes]
        if strangers:
            raise ImageFolderError(f"{folder / strangers[0]} is a class that train/ lacks: add "
                                   f"train/{strangers[0]}/ or remove it from {split}/")
        items: list[tuple[Path, int]] = []
        for index, name in enumerate(classes):
            class_dir = folder / name
            if not class_dir.is_dir():
                continue
            files = sorted(p for p in class_dir.iterdir() if not p.name.startswith("."))
            for f in files:
                if f.is_dir() or f.suffix.lower() not in IMAGE_SUFFIXES:
                    raise ImageFolderError(f"{f} is not an image ({', '.join(IMAGE_SUFFIXES)}):"
                                           f" move it out of {class_dir}")
            if not files:
                raise ImageFolderError(f"{class_dir} holds no images: add some, or remove the "
                                       f"class folder")
            items += [(f, index) for f in files]
        out[split] = items
    return out


def fingerprint(root: Path, listing: dict[str, list[tuple[Path, int]]], *settings: object) -> str:
    """Digest of every file's path (relative to root), class and size, and `settings`."""
    h = hashlib.sha256(json.dumps([str(s) for s in settings]).encode())
    for split, items in listing.items():
        for path, label in items:
            h.update(f"{split}\0{path.relative_to(root)}\0{label}\0{path.stat().st_size}\n"
                     .encode())
    return h.hexdigest()[:16]


def _decode(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """One image as (3, H, W) uint8, resized to `size` (H, W) if given."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        reason = " ".join(str(e).split())[:120]
        raise ImageFolderError(f"{path} is not a readable image ({reason}): replace or remove "
                               f"it") from None


def _write_split(items: list[tuple[Path, int]], size: tuple[int, int] | None,
                 x_path: Path, y_path: Path) -> None:
    """Decode `items` into x_path (N, 3, H, W) uint8 and y_path (N,) int64."""
    first = _decode(items[0][0], size)
    shape = first.shape
    x = np.lib.format.open_memmap(x_path, mode="w+", dtype=np.uint8,
                                  shape=(len(items), *shape))
    x[0] = first
    for i, (path, _) in enumerate(items[1:], start=1):
        img = _decode(path, size)
        if img.shape != shape:
            raise ImageFolderError(
                f"{path} is {img.shape[2]}x{img.shape[1]}, but {items[0][0]} is "
                f"{shape[2]}x{shape[1]}: set dataset.image_size=<pixels> to resize them all")
        x[i] = img
    x.flush()
    del x
    np.save(y_path, np.array([label for _, label in items], dtype=np.int64))


def _carve(n: int, val_size: int, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, val rows) of n samples: the permutation of src/data/loader.py's
    split_train_val, so a folder splits as every other dataset does."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed)).numpy()
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def _build_cache(root: Path, listing: dict[str, list[tuple[Path, int]]],
                 size: tuple[int, int] | None, val_size: int, split_seed: int,
                 target: Path) -> None:
    """Decode the folder into `target` (a folder made atomically: a temporary sibling renamed
    once every file is there; a concurrent reader never sees half of it)."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.partial")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    started = time.perf_counter()
    try:
        for split, items in listing.items():
            if items:
                _write_split(items, size, temporary / f"{split}_x.npy",
                             temporary / f"{split}_y.npy")
        if "val" not in listing:  # carve val from train, as split_train_val does
            x = np.load(temporary / "train_x.npy", mmap_mode="r")
            y = np.load(temporary / "train_y.npy")
            if not 0 < val_size < len(y):
                raise ImageFolderError(f"dataset.val_size={val_size} must lie in 1..{len(y) - 1}"
                                       f" ({root / 'train'} has {len(y)} images), or add a val/ "
                                       f"folder")
            rows_train, rows_val = _carve(len(y), val_size, split_seed)
            for name, rows in (("train", rows_train), ("val", rows_val)):
                np.save(temporary / f"{name}_x.carved.npy", x[rows])
                np.save(temporary / f"{name}_y.carved.npy", y[rows])
            del x
            for name in ("train", "val"):
                for part in ("x", "y"):
                    os.replace(temporary / f"{name}_{part}.carved.npy",
                               temporary / f"{name}_{part}.npy")
        mean, std = _channel_stats(np.load(temporary / "train_x.npy", mmap_mode="r"))
        files = sum(len(v) for v in listing.values())
        read = sum(p.stat().st_size for v in listing.values() for p, _ in v)
        seconds = time.perf_counter() - started
        (temporary / "meta.json").write_text(json.dumps({
            "mean": mean, "std": std, "num_classes":
            1 + max(label for v in listing.values() for _, label in v), "files": files,
            "bytes_read": read, "seconds": seconds}))
        try:
            os.replace(temporary, target)
        except OSError:  # another process cached the same folder first: its copy is the same
            shutil.rmtree(temporary, ignore_errors=True)
        log.info("image_folder: decoded %d images (%.1f MB) in %.1f s (%.1f MB/s) into %s",
                 files, read / 1e6, seconds, read / 1e6 / max(seconds, 1e-9), target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of (N, C, H, W) uint8, read in chunks (float64
    sums: a float copy of 50k CIFAR-sized images would take 600 MB)."""
    total = np.zeros(x.shape[1])
    squares = np.zeros(x.shape[1])
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk].astype(np.float64)
        total += part.sum(axis=(0, 2, 3))
        squares += (part ** 2).sum(axis=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0) * count / max(count - 1, 1))
    return mean.tolist(), std.tolist()


def cache_files(target: Path) -> Iterator[tuple[str, Path, Path]]:
    """(split, x file, y file) of a cache folder."""
    for split in SPLITS:
        if (target / f"{split}_x.npy").exists():
            yield split, target / f"{split}_x.npy", target / f"{split}_y.npy"


@reads_files(_folder_missing)
def image_folder(root: str | None = None, image_size: int | list[int] | None = None,
                 cache_dir: str = "data/cache", val_size: int = 5000,
                 split_seed: int = 1234) -> RawData:
    """The folder `root` (see the module docstring) as uint8 (N, 3, H, W) memory-mapped tensors;
    x of every split reads from the cache files (`RawData.files`)."""
    missing = _folder_missing(root)
    if missing is not None:
        raise missing
    assert root is not None
    folder = Path(root).resolve()
    size = None
    if image_size is not None:
        sizes = [int(s) for s in image_size] if not isinstance(image_size, int) else \
            [image_size, image_size]
        if len(sizes) != 2 or min(sizes) < 1:
            raise ImageFolderError(f"dataset.image_size={image_size}: use pixels (32) or "
                                   f"[height,width]")
        size = (sizes[0], sizes[1])
    listing = _listing(folder)
    carving = (val_size, split_seed) if "val" not in listing else ()
    digest = fingerprint(folder, listing, size, *carving)
    target = Path(cache_dir).resolve() / f"image_folder-{digest}"
    if not (target / "meta.json").exists():
        _build_cache(folder, listing, size, val_size, split_seed, target)
    meta = json.loads((target / "meta.json").read_text())
    arrays = {}
    for split, x_file, y_file in cache_files(target):
        # copy-on-write maps: torch wants writable memory; nothing writes, nothing is copied
        arrays[split] = (torch.from_numpy(np.load(x_file, mmap_mode="c")),
                         torch.from_numpy(np.load(y_file)))
    test = arrays.get("test", arrays["val"])
    if "test" not in arrays:
        log.info("image_folder: %s has no test/ folder: the validation split is also the test "
                 "split", folder)
    return RawData(arrays["train"][0], arrays["train"][1], test[0], test[1],
                   meta["num_classes"], tuple(meta["mean"]), tuple(meta["std"]),
                   val_x=arrays["val"][0], val_y=arrays["val"][1], fingerprint=digest,
                   files={split: x for split, x, _ in cache_files(target)}
                   | ({"test": target / "val_x.npy"} if "test" not in arrays else {}))
