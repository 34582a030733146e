"""signSGD (Bernstein et al. 2018) as the compressed-SGD study defines it."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim import Optimizer


def sign_with_random_zeros(g: torch.Tensor) -> torch.Tensor:
    """sign(g) with every zero replaced by an independent random +-1 (so 1 bit always suffices)."""
    coin = torch.randint_like(g, 0, 2).mul_(2).sub_(1)
    return torch.where(g == 0, coin, torch.sign(g))


class SignSGD(Optimizer):
    """p <- p - lr * sign(g + wd * p); zero entries of the sign become random +-1.

    No state: the update needs only the current gradient.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, weight_decay: float = 0.0) -> None:
        if lr <= 0:
            raise ValueError(f"optimizer.lr={lr} must be > 0")
        if weight_decay < 0:
            raise ValueError(f"optimizer.weight_decay={weight_decay} must be >= 0")
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            signs = [sign_with_random_zeros(g) for g in grads]
            torch._foreach_add_(params, signs, alpha=-group["lr"])
        return loss
