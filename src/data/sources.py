"""Dataset readers: each returns a `RawData` of CPU tensors.

Every loader is a Hydra `_target_` (keyword arguments only). Images are stored N x C x H x W,
as uint8 for image datasets (keeps CIFAR at ~150 MB) and float32 for digits/fake. `mean`/`std`
are per channel in the same units as the stored x (e.g. 0..255 for uint8 images), so the
device-side loader can normalise with `(x.float() - mean) / std`.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import logging
import os
import pickle
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from src.core.errors import UserError

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # torchvision costs seconds to import; only the file datasets need it
    import torchvision


class DatasetNotFoundError(UserError, FileNotFoundError):
    """The dataset files are missing (or could not be downloaded); the message is one line."""


@dataclass
class RawData:
    """A dataset held as CPU tensors.

    x tensors are (N, C, H, W) (uint8 or float32), y tensors are (N,) int64 class indices;
    mean/std are per-channel statistics in the units of x.
    """

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # a source with a validation split of its own (image_folder's val/, or carved in its cache)
    val_x: Tensor | None = None
    val_y: Tensor | None = None
    # digest of the files read (a run refuses to resume on other files), and the .npy file each
    # split's x maps (what a streamed split reads from)
    fingerprint: str | None = None
    files: dict[str, Path] | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one sample, (C, H, W)."""
        c, h, w = self.train_x.shape[1:]
        return (c, h, w)


def _channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) of x (N, C, H, W), in the units of x."""
    # float32 (no copy for float data): a float64 copy of `fake` would take 1.2 GB.
    std, mean = torch.std_mean(x.float(), dim=(0, 2, 3))
    return tuple(mean.tolist()), tuple(std.tolist())


def _not_found(name: str, folder: Path, holds: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{name} not found in {folder}: set dataset.download=true (needs internet) "
        f"or data_dir=<folder that holds {holds}>"
    )


Missing = Callable[..., "DatasetNotFoundError | None"]


def reads_files(missing: Missing) -> Callable[[Callable[..., object]], Callable[..., object]]:
    """Declares that a source reads files: `missing(**the source's arguments)` returns the error
    its read would raise for lack of them (None: they are there, or it may download them), so
    a run checks before it writes anything (src/data/bundle.py: check_present)."""
    def declare(source: Callable[..., object]) -> Callable[..., object]:
        source.missing_files = missing  # type: ignore[attr-defined]
        return source
    return declare


def _idx_missing(name: str, folder: str) -> Missing:
    def missing(root: str, download: bool = False, **_: object) -> DatasetNotFoundError | None:
        raw = Path(root) / folder / "raw"
        there = all((raw / f).is_file() or _gz_of(raw, f) is not None for f in _IDX_FILES)
        return None if download or there else _not_found(name, raw, f"{folder}/raw")
    return missing


def _cifar_missing(name: str, folder: str, files: list[str]) -> Missing:
    def missing(root: str, download: bool = False, **_: object) -> DatasetNotFoundError | None:
        where = Path(root) / folder
        there = all((where / f).is_file() for f in files)
        return None if download or there else _not_found(name, where, folder)
    return missing


def _download(name: str, folder: Path, fetch: Callable[[], object]) -> None:
    """Run torchvision's download; turn its network/integrity errors into one-line errors."""
    try:
        fetch()
    except (OSError, RuntimeError) as e:  # URLError is an OSError; bad md5 is a RuntimeError
        reason = " ".join(f"{type(e).__name__}: {e}".split())  # torchvision messages span lines
        raise DatasetNotFoundError(
            f"{name} download failed ({reason}) into {folder}: check the internet connection "
            f"or set data_dir=<folder that already holds it>"
        ) from e


def digits(split_seed: int = 0, test_fraction: float = 0.2) -> RawData:
    """sklearn's bundled 8x8 digits (1797 samples, 10 classes), x float32 (N, 1, 8, 8) in 0..16.

    sklearn ships no test split, so one is carved with a generator seeded by `split_seed`
    (fixed, independent of any run seed): a random permutation, the last
    round(test_fraction * N) samples are the test set.
    """
    images, target = bundled_digits()
    x = torch.from_numpy(images).float().unsqueeze(1)
    y = torch.from_numpy(target).long()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(split_seed))
    n_test = round(test_fraction * len(y))
    train_idx, test_idx = perm[: len(y) - n_test], perm[len(y) - n_test :]
    mean, std = _channel_stats(x[train_idx])
    return RawData(x[train_idx], y[train_idx], x[test_idx], y[test_idx], 10, mean, std)


def bundled_digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits file scikit-learn ships (what sklearn.datasets.load_digits reads: images
    (1797, 8, 8) float64 and labels int), read without importing sklearn, which costs a second
    of every run's start-up."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("dataset=digits reads scikit-learn's bundled digits: pip install "
                        "scikit-learn (requirements.txt has it)")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _gz_of(raw: Path, file: str) -> Path | None:
    """The official .gz of idx `file`, in `raw`, its parent or theirs, where one is found."""
    return next((p / f"{file}.gz" for p in (raw, raw.parent, raw.parent.parent)
                 if (p / f"{file}.gz").is_file()), None)


def _decompress_idx(name: str, raw: Path, published: dict[str, str], checksums: str) -> None:
    """Decompress each missing idx file of `raw` from its .gz, where one is found."""
    for file in _IDX_FILES:
        target = raw / file
        source = _gz_of(raw, file)
        if target.is_file() or source is None:
            continue
        warning = check_published(source, published.get(source.name), name, checksums)
        raw.mkdir(parents=True, exist_ok=True)
        partial = raw / f".{file}.{os.getpid()}.partial"
        try:
            with gzip.open(source, "rb") as f, open(partial, "wb") as out:
                shutil.copyfileobj(f, out, 1 << 20)
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            partial.unlink(missing_ok=True)
            raise _damaged(source, e) from None
        os.replace(partial, target)  # readers never see a half-written file
        if warning:
            log.warning(warning)
        log.info("decompressed %s into %s", source, target)


def _idx_dataset(
    name: str,
    cls: type[torchvision.datasets.MNIST],
    root: str,
    download: bool,
    mean: float,
    std: float,
    checksums: str = "warn",
) -> RawData:
    """MNIST-style idx files read by torchvision from `<root>/<cls.__name__>/raw/`.

    The official .gz files alone (what torchvision's download leaves, or copied in by hand, in
    that folder, in `<root>/<cls.__name__>/` or in `<root>/`) are checked against the published
    md5 and decompressed into it.
    """
    raw = Path(root) / cls.__name__ / "raw"

    def present() -> bool:
        return all((raw / f).is_file() for f in _IDX_FILES)

    if not present():
        _decompress_idx(name, raw, dict(cls.resources), checksums)
    if not present() and download:
        _download(name, raw, lambda: cls(root, train=True, download=True))
    if not present():
        raise _not_found(name, raw, f"{cls.__name__}/raw")
    try:
        train, test = cls(root, train=True), cls(root, train=False)
    except (RuntimeError, ValueError, OSError, IndexError) as e:  # torchvision's idx reader
        raise DatasetFileError(f"an idx file in {raw} is truncated or damaged ({type(e).__name__}:"
                               f" {' '.join(str(e).split())[:80]}): delete the folder and "
                               f"download the dataset again (dataset.download=true)") from None
    return RawData(
        train.data.unsqueeze(1),
        train.targets.long(),
        test.data.unsqueeze(1),
        test.targets.long(),
        10,
        (mean * 255,),
        (std * 255,),
    )


@reads_files(_idx_missing("mnist", "MNIST"))
def mnist(root: str, download: bool = False, checksums: str = "warn") -> RawData:
    """MNIST: 60k train / 10k test, x uint8 (N, 1, 28, 28), 10 classes."""
    import torchvision

    return _idx_dataset("mnist", torchvision.datasets.MNIST, root, download, 0.1307, 0.3081,
                        checksums)


@reads_files(_idx_missing("fashion_mnist", "FashionMNIST"))
def fashion_mnist(root: str, download: bool = False, checksums: str = "warn") -> RawData:
    """Fashion-MNIST: 60k train / 10k test, x uint8 (N, 1, 28, 28), 10 classes."""
    import torchvision

    return _idx_dataset(
        "fashion_mnist", torchvision.datasets.FashionMNIST, root, download, 0.2860, 0.3530,
        checksums
    )


class DatasetFileError(UserError):
    """A dataset file on disk that is truncated, damaged or not data."""


# What a CIFAR batch may reference: numpy's array reconstruction and bytes, nothing that runs
# code.
_PICKLE_GLOBALS = {(module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
                   for name in ("_reconstruct", "scalar")} | {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocol 2
    ("builtins", "bytearray")}


class _DataUnpickler(pickle.Unpickler):
    """Unpickles plain data only: dicts, lists, bytes, numbers and numpy arrays. Any other
    global (os.system, builtins.eval, ...) is refused before it can be called."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it references {module}.{name}")


def read_data_pickle(path: Path) -> dict:
    """A pickled dataset file read as plain data; one-line DatasetFileError otherwise.

    Datasets distributed as pickles (CIFAR) are the one place the project unpickles, and only
    through _DataUnpickler: a planted file cannot run code.
    """
    try:
        with open(path, "rb") as f:
            batch = _DataUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as e:
        if "references" in str(e):
            raise DatasetFileError(f"{path} is not a dataset file ({e}, which data never "
                                   f"does): refused; delete it and download the dataset again "
                                   f"(dataset.download=true)") from None
        raise _damaged(path, e) from None
    except (EOFError, ValueError, TypeError, IndexError) as e:
        raise _damaged(path, e) from None
    if not isinstance(batch, dict):
        raise DatasetFileError(f"{path} holds a {type(batch).__name__}, not a CIFAR batch: "
                               f"delete it and download the dataset again")
    return batch


def _damaged(path: Path, e: BaseException) -> DatasetFileError:
    return DatasetFileError(f"{path} is truncated or damaged ({type(e).__name__}): delete it and "
                            f"download the dataset again (dataset.download=true)")


def check_published(path: Path, md5: str | None, name: str, checksums: str) -> str | None:
    """Compare a dataset file with the published md5, where it is known.

    checksums: warn (a differing file, e.g. one you regenerated, is read, and a line says so),
    strict (it is refused) or off. Returns the warning, which the caller logs once the file
    has read: a damaged file gets its one error line alone.
    """
    if md5 is None or checksums == "off":
        return None
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "md5").hexdigest()
    if digest == md5:
        return None
    message = (f"{path} differs from the published {name} file (md5 {digest}, published {md5})")
    if checksums == "strict":
        raise DatasetFileError(f"{message}: delete it and download the dataset again, or pass "
                               f"dataset.checksums=warn to read files you made yourself")
    if checksums != "warn":
        raise DatasetFileError(f"dataset.checksums={checksums}: use warn, strict or off")
    return (f"{message}: reading it anyway, as plain data (dataset.checksums=strict refuses "
            f"such files)")


def _read_cifar_batches(folder: Path, files: list[str], label_key: bytes,
                        published: dict[str, str], name: str,
                        checksums: str) -> tuple[Tensor, Tensor]:
    """Concatenate pickled CIFAR batches: x uint8 (N, 3, 32, 32), y int64 (N,)."""
    xs, ys = [], []
    for file in files:
        warning = check_published(folder / file, published.get(file), name, checksums)
        batch = read_data_pickle(folder / file)
        # The official (Python 2) files decode to bytes keys; files pickled by Python 3, as
        # torchvision's own reader expects them too, have str keys. Accept both.
        batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
        try:
            x = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3072)
            y = np.asarray(batch[label_key.decode()], dtype=np.int64).reshape(-1)
        except (KeyError, ValueError, TypeError) as e:
            raise DatasetFileError(f"{folder / file} is not a CIFAR batch ({type(e).__name__}: "
                                   f"{e}): delete it and download the dataset again") from None
        if len(x) != len(y):
            raise _damaged(folder / file, ValueError("data and labels differ in length"))
        if warning:
            log.warning(warning)
        xs.append(x)
        ys.append(y)
    # Each row is 3072 bytes in row-major C, H, W order (1024 red, then green, then blue).
    x = torch.from_numpy(np.concatenate(xs)).reshape(-1, 3, 32, 32)
    return x, torch.from_numpy(np.concatenate(ys))


def _cifar(
    name: str,
    cls: type[torchvision.datasets.CIFAR10],
    root: str,
    download: bool,
    train_files: list[str],
    test_files: list[str],
    label_key: bytes,
    num_classes: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    checksums: str,
) -> RawData:
    """Read a CIFAR python-format folder with our own parser.

    torchvision's CIFAR classes verify md5 sums of every batch, which would reject small test
    fixtures, so torchvision is only used to download, verify and extract the archive.
    """
    folder = Path(root) / cls.base_folder

    def present() -> bool:
        return all((folder / f).is_file() for f in train_files + test_files)

    if not present() and download:
        _download(name, folder, lambda: cls(root, train=True, download=True))
    if not present():
        raise _not_found(name, folder, cls.base_folder)
    published = dict(cls.train_list + cls.test_list)  # torchvision's md5 of each batch file
    train_x, train_y = _read_cifar_batches(folder, train_files, label_key, published, name,
                                           checksums)
    test_x, test_y = _read_cifar_batches(folder, test_files, label_key, published, name,
                                         checksums)
    return RawData(
        train_x,
        train_y,
        test_x,
        test_y,
        num_classes,
        tuple(m * 255 for m in mean),
        tuple(s * 255 for s in std),
    )


CIFAR10_FILES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
CIFAR100_FILES = ["train", "test"]


@reads_files(_cifar_missing("cifar10", "cifar-10-batches-py", CIFAR10_FILES))
def cifar10(root: str, download: bool = False, checksums: str = "warn") -> RawData:
    """CIFAR-10: 50k train / 10k test, x uint8 (N, 3, 32, 32), 10 classes."""
    import torchvision

    return _cifar(
        "cifar10",
        torchvision.datasets.CIFAR10,
        root,
        download,
        CIFAR10_FILES[:-1],
        CIFAR10_FILES[-1:],
        b"labels",
        10,
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        checksums,
    )


@reads_files(_cifar_missing("cifar100", "cifar-100-python", CIFAR100_FILES))
def cifar100(root: str, download: bool = False, checksums: str = "warn") -> RawData:
    """CIFAR-100: 50k train / 10k test, x uint8 (N, 3, 32, 32), 100 fine classes."""
    import torchvision

    return _cifar(
        "cifar100",
        torchvision.datasets.CIFAR100,
        root,
        download,
        CIFAR100_FILES[:1],
        CIFAR100_FILES[1:],
        b"fine_labels",
        100,
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        checksums,
    )


def fake(
    num_train: int = 50000,
    num_test: int = 10000,
    num_classes: int = 10,
    shape: tuple[int, ...] = (3, 32, 32),
    seed: int = 0,
) -> RawData:
    """Synthetic, learnable CIFAR-shaped data, x float32 (N, *shape).

    Each class has a fixed random template (standard normal); a sample is its class template
    plus standard normal noise, so classes are separable yet single samples are noisy.
    Everything is drawn from one generator seeded with `seed`.
    """
    shape = tuple(int(s) for s in shape)  # Hydra passes a ListConfig
    g = torch.Generator().manual_seed(seed)
    templates = torch.randn(num_classes, *shape, generator=g)

    def draw(n: int) -> tuple[Tensor, Tensor]:
        y = torch.randint(num_classes, (n,), generator=g)
        x = torch.randn(n, *shape, generator=g)
        # Per-class in-place add avoids materialising templates[y], a second full-size copy.
        for c in range(num_classes):
            x[y == c] += templates[c]
        return x, y

    train_x, train_y = draw(num_train)
    test_x, test_y = draw(num_test)
    mean, std = _channel_stats(train_x)
    return RawData(train_x, train_y, test_x, test_y, num_classes, mean, std)
