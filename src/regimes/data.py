"""Binary (+-1 label) datasets of the regimes study, split by separate train and test seeds.

Every loader is a Hydra `_target_` taking the sizes and seeds from the dataset config and returns
a `BinaryData` of float64 CPU tensors; the runner casts them to the run's dtype and device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from src.data import sources

# Pixel statistics of the study, in 0..255 units, over all images of the dataset.
MNIST_MEAN, MNIST_STD = 33.31, 78.57
CIFAR_MEAN, CIFAR_STD = 120.93, 64.14
CIFAR_VEHICLES = (0, 1, 8, 9)  # airplane, automobile, ship, truck: label -1; animals +1


@dataclass
class BinaryData:
    """x: (N, ...) float, y: (N,) float in {-1, +1}."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor

    def to(self, device: torch.device, dtype: torch.dtype) -> BinaryData:
        return BinaryData(*(t.to(device=device, dtype=dtype) for t in (
            self.train_x, self.train_y, self.test_x, self.test_y)))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


def depleted_sign(n: int, d: int, chi: float, seed: int) -> tuple[Tensor, Tensor]:
    """n points of the depleted-sign teacher: x_2..x_d ~ N(0, 1), x_1 = s sqrt(2G) with
    G ~ Gamma((chi + 1) / 2, 1) and s = +-1 with equal odds, so that the density of x_1 is
    proportional to |x_1|^chi exp(-x_1^2 / 2) and E[x_1^2] = chi + 1; label y = sign(x_1)."""
    rng = np.random.default_rng(seed)
    sign = rng.choice(np.array([-1.0, 1.0]), size=n)
    x1 = sign * np.sqrt(2.0 * rng.gamma((chi + 1.0) / 2.0, 1.0, size=n))
    x = np.concatenate([x1[:, None], rng.standard_normal((n, d - 1))], axis=1)
    return torch.from_numpy(x), torch.from_numpy(sign)


def teacher_student(ptr: int, pte: int, seed_train: int, seed_test: int, d: int = 128,
                    chi: float = 0.0) -> BinaryData:
    """Train and test points drawn independently with their own seeds (chi = 0: Gaussian x)."""
    if d < 1 or chi <= -1:
        raise ValueError(f"teacher_student d={d}, chi={chi}: use d >= 1 and chi > -1")
    train_x, train_y = depleted_sign(ptr, d, chi, seed_train)
    test_x, test_y = depleted_sign(pte, d, chi, seed_test)
    return BinaryData(train_x, train_y, test_x, test_y)


def split(x: Tensor, y: Tensor, ptr: int, pte: int, seed_train: int, seed_test: int,
          name: str) -> BinaryData:
    """Shuffle with the test seed and take `pte` test points, then shuffle the rest with the
    train seed and take `ptr` training points."""
    if ptr + pte > len(x):
        raise ValueError(f"{name}: ptr={ptr} + pte={pte} exceeds its {len(x)} points: lower "
                         f"dataset.ptr or dataset.pte")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed_test))
    test, rest = order[:pte], order[pte:]
    rest = rest[torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed_train))]
    train = rest[:ptr]
    return BinaryData(x[train], y[train], x[test], y[test])


@sources.reads_files(sources.mnist.missing_files)
def mnist_parity(ptr: int, pte: int, seed_train: int, seed_test: int, root: str,
                 download: bool = False) -> BinaryData:
    """All 70k MNIST images, (x - 33.31) / 78.57 in pixel units; y = +1 even digit, -1 odd."""
    raw = sources.mnist(root, download)
    x = torch.cat([raw.train_x, raw.test_x]).double()
    digit = torch.cat([raw.train_y, raw.test_y])
    y = 1.0 - 2.0 * (digit % 2).double()
    return split((x - MNIST_MEAN) / MNIST_STD, y, ptr, pte, seed_train, seed_test,
                 "mnist_parity")


@sources.reads_files(sources.cifar10.missing_files)
def cifar_animal(ptr: int, pte: int, seed_train: int, seed_test: int, root: str,
                 download: bool = False) -> BinaryData:
    """All 60k CIFAR-10 images, (x - 120.93) / 64.14; y = -1 vehicles, +1 animals."""
    raw = sources.cifar10(root, download)
    x = torch.cat([raw.train_x, raw.test_x]).double()
    label = torch.cat([raw.train_y, raw.test_y])
    vehicle = torch.isin(label, torch.tensor(CIFAR_VEHICLES))
    y = torch.where(vehicle, -1.0, 1.0).double()
    return split((x - CIFAR_MEAN) / CIFAR_STD, y, ptr, pte, seed_train, seed_test,
                 "cifar_animal")
