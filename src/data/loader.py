"""Batching with batched on-device augmentation, from data on the device or streamed to it.

A resident split lives whole on the training device; batches are drawn by index, augmented as
one batched op (no PIL, no per-sample Python loop) and normalised to float32. A streamed split
stays in a uint8 .npy file (image_folder's cache): DataLoader workers gather each batch's rows
from it into pinned memory, ahead of the step, and the same on-device augmentation follows. The
order of samples and every random draw come from the run's generator on the training device,
never from the loader's workers, so a streamed split gives the batches a resident one gives.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from src.core.errors import ConfigError
from src.data.augment import Mix, Recipe


class DeviceData:
    """Batches over (x, y) tensors that already sit on the training device.

    x: (N, C, H, W) uint8 or float32 in raw units; y: (N,) int64. mean/std are per-channel in
    the units of x. Augmentation (random crop with zero padding, horizontal flip) is meant for
    training data only; eval data uses shuffle=False, drop_last=False and no augmentation.
    recipe: the augmentations of src/data/augment.py (training data only): with label
    smoothing or mixing, y of a batch is class probabilities (B, num_classes).
    device: where batches are delivered (default: x's device). stream: the .npy file whose
    first N rows x maps, read by `stream_workers` DataLoader workers (a streamed split); x then
    stays on the CPU.
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
        device: torch.device | None = None,
        stream: Path | None = None,
        stream_workers: int = 2,
        recipe: Recipe | None = None,
        num_classes: int = 0,
    ) -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = torch.device(device) if device is not None else x.device
        self.x, self.y = x, y.to(self.device)
        self.stream, self.stream_workers = stream, stream_workers
        self.recipe, self.num_classes = recipe, num_classes
        if recipe is not None and recipe.policy and x.dtype != torch.uint8:
            raise ConfigError(f"augment.policy={recipe.policy} transforms 8-bit images "
                              f"(cifar10, image_folder, ...): this dataset holds {x.dtype} "
                              f"values; set augment.policy=null")
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.crop_padding = crop_padding
        self.flip = flip
        self._normalised: Tensor | None = None  # assemble(out=...) makes it when it is first asked

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

        `generator` (on the device) drives the shuffle order and the augmentation; the same
        generator state gives the same batches. It may be None when nothing is random.
        """
        if self.stream is None or self.stream_workers == 0:
            for draw in self.draws(generator):
                yield self.assemble([draw])
            return
        order = self._order(generator)
        loader = DataLoader(_Rows(self.stream, order.cpu(), self.batch_size, len(self)),
                            batch_size=None, num_workers=self.stream_workers,
                            pin_memory=self.device.type == "cuda", prefetch_factor=4)
        for draw, rows in zip(self._draws_from(order, generator), loader, strict=True):
            yield self.assemble([draw], rows=rows.to(self.device, non_blocking=True))

    def _order(self, generator: torch.Generator | None) -> Tensor:
        if self.shuffle:
            return torch.randperm(self.num_samples, generator=generator, device=self.device)
        return torch.arange(self.num_samples, device=self.device)

    def draws(self, generator: torch.Generator | None) -> Iterator[Draw]:
        """One epoch of batches as their random draws (what `batches` builds them from): the
        order once, then per batch the crop offsets and the flips, in that order."""
        return self._draws_from(self._order(generator), generator)

    def _draws_from(self, order: Tensor, generator: torch.Generator | None) -> Iterator[Draw]:
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            b, dev = len(idx), self.device
            offsets = (torch.randint(0, 2 * self.crop_padding + 1, (b, 2), generator=generator,
                                     device=dev) if self.crop_padding > 0 else None)
            flips = (torch.rand(b, generator=generator, device=dev) < 0.5 if self.flip
                     else None)
            mix = (self.recipe.draw(generator, dev, tuple(self.x.shape[2:4]))
                   if self.recipe is not None else None)
            yield Draw(idx, offsets, flips, mix)

    def assemble(self, draws: Sequence[Draw], out: tuple[Tensor, Tensor] | None = None,
                 rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The batches of `draws` concatenated: one gather, crop, flip and normalisation for
        all of them (several runs' batches at once: stacked runs). Per sample, the same
        numbers as each batch built alone.

        out: (x, y) to write into (stacked runs' step buffers). Without cropping, they are
        gathered from a normalised copy of the split, made once: normalising commutes with
        gathering and flipping, and a step then allocates nothing.
        rows: the raw samples of `draws` already gathered (a streamed split's loader)."""
        if self.recipe is not None and len(draws) > 1:  # each draw mixes within its own batch
            parts = [self.assemble([d]) for d in draws]
            batch = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
            if out is None:
                return batch
            out[0].copy_(batch[0])
            out[1].copy_(batch[1])
            return out
        idx = draws[0].idx if len(draws) == 1 else torch.cat([d.idx for d in draws])
        if (out is not None and self.crop_padding == 0 and self.stream is None
                and self.recipe is None):
            if self._normalised is None:
                self._normalised = (self.x.float() - self.mean) / self.std
            x, y = out
            torch.index_select(self._normalised, 0, idx, out=x)
            if self.flip:
                flips = torch.cat([d.flips for d in draws]).view(-1, 1, 1, 1)
                x.copy_(torch.where(flips, x.flip(3), x))
            return x, torch.index_select(self.y, 0, idx, out=y)
        xb = rows if rows is not None else self._gather(idx)
        flips = torch.cat([d.flips for d in draws]) if self.flip else None
        if self.crop_padding > 0:  # the flip is the crop's columns read backwards
            xb = self._crop(xb, torch.cat([d.offsets for d in draws]), flips)
        elif flips is not None:
            xb = torch.where(flips.view(-1, 1, 1, 1), xb.flip(3), xb)
        mix = draws[0].mix
        if mix is not None:
            assert self.recipe is not None
            xb = self.recipe.transform(xb, mix)
        batch = ((xb.float() - self.mean) / self.std, self.y[idx])
        if mix is not None:
            assert self.recipe is not None
            batch = self.recipe.mixed(*batch, mix, self.num_classes)
        if out is not None:
            out[0].copy_(batch[0])
            out[1].copy_(batch[1])
            return out
        return batch

    def _gather(self, idx: Tensor) -> Tensor:
        """The raw samples `idx` on the device (from the host, pinned, for a streamed split)."""
        if self.x.device == self.device:
            return self.x[idx]
        xb = self.x[idx.cpu()]
        if self.device.type == "cuda":
            return xb.pin_memory().to(self.device, non_blocking=True)
        return xb.to(self.device)

    def _crop(self, xb: Tensor, offsets: Tensor, flips: Tensor | None) -> Tensor:
        """Zero-pad the raw batch by `crop_padding` and take one HxW crop per sample at
        `offsets` (B, 2) of (top, left) in [0, 2 * padding], its columns read backwards where
        `flips` (B,) is set.

        Padding the raw values with 0 before normalising matches torchvision's
        RandomCrop(padding) + RandomHorizontalFlip + ToTensor + Normalize; the crop and the flip
        are one gather along each image's flattened pixels (the index broadcast over the
        channels, never materialised per channel).
        """
        b, c, h, w = xb.shape
        p = self.crop_padding
        dev = xb.device
        padded = F.pad(xb, (p, p, p, p))
        rows = offsets[:, 0:1] + torch.arange(h, device=dev)  # (B, H)
        cols = offsets[:, 1:2] + torch.arange(w, device=dev)  # (B, W)
        if flips is not None:
            cols = torch.where(flips.view(-1, 1), cols.flip(1), cols)
        index = (rows.view(b, h, 1) * (w + 2 * p) + cols.view(b, 1, w)).view(b, 1, h * w)
        return padded.view(b, c, -1).gather(2, index.expand(b, c, h * w)).view(b, c, h, w)


class _Rows(Dataset):
    """Batch i of an epoch: the rows order[i*B:(i+1)*B] of the .npy file `path`, uint8, read
    in a loader's worker (which maps the file itself: nothing large crosses processes)."""

    def __init__(self, path: Path, order: Tensor, batch_size: int, batches: int) -> None:
        self.path, self.order, self.batch_size, self.batches = path, order, batch_size, batches
        self.x: np.ndarray | None = None

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, i: int) -> Tensor:
        if self.x is None:
            self.x = np.load(self.path, mmap_mode="r")
        rows = self.order[i * self.batch_size : (i + 1) * self.batch_size].numpy()
        return torch.from_numpy(self.x[rows])


class Draw(NamedTuple):
    """The random part of one batch: sample indices (B,), crop offsets (B, 2) or None, flips
    (B,) bool or None, and the recipe's choices or None (DeviceData.draws)."""

    idx: Tensor
    offsets: Tensor | None
    flips: Tensor | None
    mix: Mix | None = None


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
