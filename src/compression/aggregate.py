"""Combining W workers' contributions into one update."""

from __future__ import annotations

import torch
from torch import Tensor

from src.compression.compressors import random_signs

TIES = ("random", "zero")


def mean(values: Tensor) -> Tensor:
    """(W, n) -> (n,): the mean over workers."""
    return values.mean(dim=0)


def vote(levels: Tensor, tie: str = "random", generator: torch.Generator | None = None,
         max_level: int | None = None) -> Tensor:
    """(W, n) integer levels -> (n,) int32: the mean level rounded away from zero.

    S = sum over workers; ceil(S / W) if S > 0, floor(S / W) if S < 0; S = 0 is a tie: a random
    +-1 ('random', the seed's rule) or 0 ('zero'). For 1-bit levels this is a majority vote; with
    W = 1 nonzero levels come back unchanged. max_level: the largest |level| if known; 1 makes
    the result sign(S) directly (|S| <= W, so ceil(|S| / W) = 1 for every S != 0).
    """
    if tie not in TIES:
        raise ValueError(f"tie={tie} is not a tie rule: use random or zero")
    w = levels.shape[0]
    s = levels[0].to(torch.int32, copy=True)
    for row in levels[1:]:  # W - 1 integer adds: cheaper than a strided reduction over dim 0
        s.add_(row)
    if w == 1:
        away = s
    elif max_level == 1:
        away = torch.sign(s)
    else:
        # Float32 is exact here: level sums are small integers, and a quotient of small integers
        # is either exactly an integer or far (>= 1/W) from one, so ceil sees no rounding error.
        sf = s.float()
        away = torch.ceil(sf.abs().div_(w)).mul_(torch.sign(sf)).to(torch.int32)
    fill = random_signs(away, generator) if tie == "random" else torch.zeros_like(away)
    return torch.where(s == 0, fill, away)
