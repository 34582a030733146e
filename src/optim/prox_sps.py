"""ProxSPS: the stochastic proximal Polyak step size (Schaipp, Gower, Ulbrich 2023).

For the regulariser (wd / 2) ||x||^2 the proximal step is
    x_{k+1} = (x_k - tau_k g_k) / (1 + lr wd),
    tau_k = min(lr, max(0, (1 + lr wd)(f_k - lb) - lr wd <g_k, x_k>) / ||g_k||^2),
with f_k the mini-batch loss and g_k its gradient; wd = 0 gives SPS_max. `step_size` holds the
adaptive term max(0, ...) / ||g_k||^2 (the records' logged step size).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from src.optim.loss_step import LossStepOptimizer, safe_ratio, sum_dot


class ProxSPS(LossStepOptimizer):
    """ProxSPS with learning-rate cap `lr` and loss lower bound `lb` (0 for cross-entropy)."""

    def __init__(self, params: Iterable[Any], lr: float = 1.0, weight_decay: float = 0.0,
                 lb: float = 0.0) -> None:
        if lr < 0:
            raise ValueError(f"lr={lr} is negative: use a learning rate >= 0")
        if weight_decay < 0:
            raise ValueError(f"weight_decay={weight_decay} is negative: use >= 0")
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})
        self.lb = lb

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None,
             loss: torch.Tensor | None = None) -> torch.Tensor:
        loss = self.loss_of(closure, loss)
        params = self.params_with_grad()
        grads = [p.grad for p in params]
        norm, grad_dot_w = sum_dot(grads, grads), sum_dot(grads, params)
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            own = [p for p in group["params"] if p.grad is not None]
            t = safe_ratio((1 + lr * wd) * (loss - self.lb) - lr * wd * grad_dot_w, norm)
            torch._foreach_sub_(own, torch._foreach_mul([p.grad for p in own], t.clamp(max=lr)))
            if wd > 0:
                torch._foreach_div_(own, 1 + lr * wd)
            self.step_size = t
        return loss
