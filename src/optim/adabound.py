"""AdaBound (Luo et al. 2019): Adam whose per-element step is clipped into bounds that close in
on an SGD learning rate.

The update of the authors' `adabound` 0.0.5 package (the records' adabound), written with
multi-tensor ops and without the deprecated `add_(scalar, tensor)` overloads that package uses:
    m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2   (g includes the L2 term wd * x),
    eta = clip(lr sqrt(1 - b2^k) / (1 - b1^k) / (sqrt(v) + eps), lower_k, upper_k),
    x <- x - eta * m,
with final = final_lr * lr / base_lr (a schedule scales the bounds too),
lower_k = final (1 - 1 / (gamma k + 1)) and upper_k = final (1 + 1 / (gamma k)).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch


class AdaBound(torch.optim.Optimizer):
    """AdaBound; `base_lr` (the lr at construction) is kept in each param group."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), final_lr: float = 0.1,
                 gamma: float = 1e-3, eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        if lr < 0 or final_lr < 0:
            raise ValueError(f"lr={lr}, final_lr={final_lr}: learning rates must be >= 0")
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas={list(betas)} must lie in [0, 1)")
        if not 0 < gamma < 1:
            raise ValueError(f"gamma={gamma} must lie in (0, 1)")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "final_lr": final_lr,
                                  "gamma": gamma, "eps": eps, "weight_decay": weight_decay})
        for group in self.param_groups:
            group.setdefault("base_lr", group["lr"])

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            b1, b2 = group["betas"]
            grads = [p.grad for p in params]
            if group["weight_decay"] != 0:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            grad_of = {id(p): g for p, g in zip(params, grads, strict=True)}
            for p in params:
                if not self.state[p]:
                    self.state[p].update(step=0, exp_avg=torch.zeros_like(p),
                                         exp_avg_sq=torch.zeros_like(p))
            # Every parameter of a group steps together (a skipped one keeps its own count).
            for steps, chunk in _by_step(params, self.state).items():
                k = steps + 1
                m = [self.state[p]["exp_avg"] for p in chunk]
                v = [self.state[p]["exp_avg_sq"] for p in chunk]
                g = [grad_of[id(p)] for p in chunk]
                torch._foreach_mul_(m, b1)
                torch._foreach_add_(m, g, alpha=1 - b1)
                torch._foreach_mul_(v, b2)
                torch._foreach_addcmul_(v, g, g, value=1 - b2)
                eta = torch._foreach_sqrt(v)
                torch._foreach_add_(eta, group["eps"])
                torch._foreach_reciprocal_(eta)
                torch._foreach_mul_(eta, group["lr"] * math.sqrt(1 - b2**k) / (1 - b1**k))
                final = group["final_lr"] * group["lr"] / group["base_lr"]
                torch._foreach_clamp_min_(eta, final * (1 - 1 / (group["gamma"] * k + 1)))
                torch._foreach_clamp_max_(eta, final * (1 + 1 / (group["gamma"] * k)))
                torch._foreach_mul_(eta, m)
                torch._foreach_sub_(chunk, eta)
                for p in chunk:
                    self.state[p]["step"] = k
        return loss


def _by_step(params: list[torch.Tensor], state: dict) -> dict[int, list[torch.Tensor]]:
    """Parameters grouped by their step count (one group unless some skipped steps)."""
    out: dict[int, list[torch.Tensor]] = {}
    for p in params:
        out.setdefault(state[p]["step"], []).append(p)
    return out
