"""Small dataset files in the real on-disk formats (CIFAR pickled batches, MNIST idx files),
written by tests: no machine here can download the real ones."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np


def write_pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def cifar_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(root: Path, per_batch: int = 3) -> dict[str, dict]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batch = {
            b"batch_label": name.encode(),
            b"labels": [(i + j) % 10 for j in range(per_batch)],
            b"data": cifar_rows(per_batch, seed=i),
            b"filenames": [f"{name}_{j}.png".encode() for j in range(per_batch)],
        }
        write_pickle(folder / name, batch)
        written[name] = batch
    write_pickle(folder / "batches.meta", {b"label_names": [b"c%d" % k for k in range(10)]})
    return written


def write_cifar100(root: Path) -> dict[str, dict]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    written = {}
    for i, (name, n) in enumerate([("train", 5), ("test", 2)]):
        batch = {
            b"fine_labels": [(37 * (i + j)) % 100 for j in range(n)],
            b"coarse_labels": [j % 20 for j in range(n)],
            b"data": cifar_rows(n, seed=10 + i),
        }
        write_pickle(folder / name, batch)
        written[name] = batch
    write_pickle(folder / "meta", {b"fine_label_names": [b"f%d" % k for k in range(100)]})
    return written


def write_idx(raw: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """MNIST idx format: big-endian magic (2051 images / 2049 labels) and dims, then bytes."""
    n, h, w = images.shape
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">iiii", 2051, n, h, w) + images.astype(np.uint8).tobytes()
    )
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">ii", 2049, n) + labels.astype(np.uint8).tobytes()
    )


def write_mnist_tree(root: Path, folder: str) -> dict[str, np.ndarray]:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train_x": rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8),
        "train_y": np.array([5, 0, 4, 1, 9, 2]),
        "test_x": rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8),
        "test_y": np.array([7, 2, 1]),
    }
    arrays["train_x"][0, 3, 17] = 201  # a known pixel: image 0, row 3, column 17
    write_idx(raw, "train", arrays["train_x"], arrays["train_y"])
    write_idx(raw, "t10k", arrays["test_x"], arrays["test_y"])
    return arrays


def write_image_folder(root: Path, splits: dict[str, int], classes: int = 3, size: int = 12,
                       seed: int = 0) -> Path:
    """An ImageFolder tree: root/<split>/class<c>/<i>.png|.jpg, `splits[split]` images per
    class, alternately PNG and JPEG, each class a brightness band plus noise (learnable)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split, n in splits.items():
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = (rng.integers(0, 60, (size, size, 3)) + c * 80).astype(np.uint8)
                Image.fromarray(pixels).save(folder / (f"{i}.png" if i % 2 else f"{i}.jpg"))
    return root
