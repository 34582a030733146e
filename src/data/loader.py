"""Device-resident batching with batched on-device augmentation.

The whole split lives on the training device; batches are drawn by index, augmented as one
batched op (no PIL, no per-sample Python loop) and normalised to float32.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor


class DeviceData:
    """Batches over (x, y) tensors that already sit on the training device.

    x: (N, C, H, W) uint8 or float32 in raw units; y: (N,) int64. mean/std are per-channel in
    the units of x. Augmentation (random crop with zero padding, horizontal flip) is meant for
    training data only; eval data uses shuffle=False, drop_last=False and no augmentation.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        crop_padding: int = 0,
        flip: bool = False,
    ) -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.x, self.y = x, y
        self.mean = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.crop_padding = crop_padding
        self.flip = flip

    @property
    def num_samples(self) -> int:
        """Number of samples N in the split."""
        return self.x.shape[0]

    def __len__(self) -> int:
        """Number of batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def batches(self, generator: torch.Generator | None) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield one epoch of normalised batches: x float32 (B, C, H, W), y int64 (B,).

        `generator` (on x.device) drives the shuffle order and the augmentation; the same
        generator state gives the same batches. It may be None when nothing is random.
        """
        n = self.num_samples
        if self.shuffle:
            order = torch.randperm(n, generator=generator, device=self.x.device)
        else:
            order = torch.arange(n, device=self.x.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            xb = self.x[idx]
            if self.crop_padding > 0:
                xb = self._random_crop(xb, generator)
            if self.flip:
                xb = self._random_flip(xb, generator)
            yield (xb.float() - self.mean) / self.std, self.y[idx]

    def _random_crop(self, xb: Tensor, generator: torch.Generator | None) -> Tensor:
        """Zero-pad the raw batch by `crop_padding` and take one random HxW crop per sample.

        Padding the raw values with 0 before normalising matches torchvision's
        RandomCrop(padding) + ToTensor + Normalize. Offsets are drawn as a (B, 2) tensor of
        (top, left) in [0, 2 * padding]; the crop is a single gather by integer indexing.
        """
        b, c, h, w = xb.shape
        p = self.crop_padding
        dev = xb.device
        padded = F.pad(xb, (p, p, p, p))
        offsets = torch.randint(0, 2 * p + 1, (b, 2), generator=generator, device=dev)
        rows = offsets[:, 0:1] + torch.arange(h, device=dev)  # (B, H)
        cols = offsets[:, 1:2] + torch.arange(w, device=dev)  # (B, W)
        return padded[
            torch.arange(b, device=dev).view(b, 1, 1, 1),
            torch.arange(c, device=dev).view(1, c, 1, 1),
            rows.view(b, 1, h, 1),
            cols.view(b, 1, 1, w),
        ]

    @staticmethod
    def _random_flip(xb: Tensor, generator: torch.Generator | None) -> Tensor:
        """Mirror each sample horizontally with probability 0.5 (per-sample Bernoulli)."""
        flip = torch.rand(xb.shape[0], generator=generator, device=xb.device) < 0.5
        return torch.where(flip.view(-1, 1, 1, 1), xb.flip(3), xb)


def split_train_val(
    x: Tensor, y: Tensor, val_size: int, split_seed: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Carve a fixed validation set from the training set.

    A permutation from a generator seeded with `split_seed` (independent of the run seed, so
    every run validates on the same samples); its first `val_size` entries are the validation
    set. Returns (x_train, y_train, x_val, y_val); val_size 0 gives empty val tensors.
    """
    n = x.shape[0]
    if not 0 <= val_size <= n:
        raise ValueError(f"val_size must be in [0, {n}], got {val_size}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed)).to(x.device)
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


def subset(x: Tensor, y: Tensor, limit: int | None) -> tuple[Tensor, Tensor]:
    """The first `limit` samples of (x, y) (for debug runs); unchanged if limit is None."""
    if limit is None:
        return x, y
    return x[:limit], y[:limit]
