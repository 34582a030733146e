"""Combining W workers' contributions into one update."""

from __future__ import annotations

import torch
from torch import Tensor

from src.compression.compressors import random_signs

TIES = ("random", "zero")


def mean(values: Tensor) -> Tensor:
    """(W, n) -> (n,): the mean over workers."""
    return values.mean(dim=0)


def vote(levels: Tensor, tie: str = "random", generator: torch.Generator | None = None) -> Tensor:
    """(W, n) integer levels -> (n,) int32: the mean level rounded away from zero.

    S = sum over workers; ceil(S / W) if S > 0, floor(S / W) if S < 0; S = 0 is a tie: a random
    +-1 ('random', the seed's rule) or 0 ('zero'). For 1-bit levels this is a majority vote; with
    W = 1 nonzero levels come back unchanged.
    """
    if tie not in TIES:
        raise ValueError(f"tie={tie} is not a tie rule: use random or zero")
    w = levels.shape[0]
    s = levels.to(torch.int64).sum(dim=0)
    # Integer ceil/floor of S/W away from zero: ceil(S/W) = -floor(-S/W) for S > 0.
    away = torch.where(s > 0, -torch.div(-s, w, rounding_mode="floor"),
                       torch.div(s, w, rounding_mode="floor")).to(torch.int32)
    fill = random_signs(away, generator) if tie == "random" else torch.zeros_like(away)
    return torch.where(s == 0, fill, away)
