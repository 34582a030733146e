"""MoMo and MoMo-Adam: momentum model-based adaptive learning rates (Schaipp et al. 2023).

The update rules of the authors' `momo-opt` 0.1.0 (the optimizer-benchmark records' momo and
momo-adam, with use_fstar off), rewritten so that every piece of state round-trips through
`state_dict()` (momo-opt keeps its step count and loss average outside it, so a resumed run would
restart its averages) and so that a step makes no host sync (momo-opt reads a scalar back to
the host on every step).

With d_k the gradient average, f_k the loss average and gamma_k the average of <g_k, x_k>,
MoMo's step is  x_{k+1} = (x_k - tau_k d_k) / (1 + lr * wd)  with
    tau_k = min(lr / rho_k, max(0, (1 + lr wd)(f_k - rho_k lb) + <d_k, x_k> - (1 + lr wd) gamma_k)
                                / ||d_k||^2),
rho_k = 1 - beta^k with bias correction, else 1 (and the averages start at the first values).
MoMo-Adam preconditions with Adam's D_k = sqrt(v_k / (1 - beta2^k)) + eps and caps at
lr / (1 - beta1^k). `step_size` holds the adaptive term (the max(0, ...) / norm part).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from src.optim.loss_step import LossStepOptimizer, safe_ratio, sum_dot


def _check(lr: float, weight_decay: float, betas: tuple[float, ...]) -> None:
    if lr < 0:
        raise ValueError(f"lr={lr} is negative: use a learning rate >= 0")
    if weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay} is negative: use >= 0")
    for beta in betas:
        if not 0 <= beta < 1:
            raise ValueError(f"beta={beta} is outside [0, 1): use a momentum in [0, 1)")


class Momo(LossStepOptimizer):
    """MoMo (SGD with momentum and a Polyak-type adaptive step); `lb` lower-bounds the loss."""

    def __init__(self, params: Iterable[Any], lr: float = 1.0, weight_decay: float = 0.0,
                 beta: float = 0.9, lb: float = 0.0, bias_correction: bool = False) -> None:
        _check(lr, weight_decay, (beta,))
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})
        self.beta, self.lb, self.bias_correction = beta, lb, bias_correction

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None,
             loss: torch.Tensor | None = None) -> torch.Tensor:
        loss = self.loss_of(closure, loss)
        beta, shared = self.beta, self.shared
        params = self.params_with_grad()
        grads = [p.grad for p in params]
        k = shared.get("step", 0) + 1
        shared["step"] = k
        grad_dot_w = sum_dot(grads, params)
        start = k == 1 and not self.bias_correction  # averages start at the first values
        if k == 1:
            shared["loss_avg"] = loss.clone() if start else torch.zeros_like(loss)
            shared["grad_dot_w"] = grad_dot_w.clone() if start else torch.zeros_like(grad_dot_w)
        for p in params:
            if "grad_avg" not in self.state[p]:
                self.state[p]["grad_avg"] = p.grad.clone() if start else torch.zeros_like(p)
        d = [self.state[p]["grad_avg"] for p in params]
        shared["loss_avg"].mul_(beta).add_(loss, alpha=1 - beta)
        shared["grad_dot_w"].mul_(beta).add_(grad_dot_w, alpha=1 - beta)
        torch._foreach_mul_(d, beta)
        torch._foreach_add_(d, grads, alpha=1 - beta)
        dot, norm = sum_dot(d, params), sum_dot(d, d)
        rho = 1 - beta**k if self.bias_correction else 1.0
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            own = [p for p in group["params"] if p.grad is not None]
            c = 1 + lr * wd
            t = safe_ratio(c * (shared["loss_avg"] - rho * self.lb) + dot
                           - c * shared["grad_dot_w"], norm)
            tau = t.clamp(max=lr / rho)
            torch._foreach_sub_(own, torch._foreach_mul([self.state[p]["grad_avg"] for p in own],
                                                        tau))
            if wd > 0:
                torch._foreach_div_(own, c)
            self.step_size = t
        return loss


class MomoAdam(LossStepOptimizer):
    """MoMo-Adam: Adam's preconditioner with MoMo's adaptive step. `divide`: weight decay as the
    proximal step x / (1 + lr wd) (else AdamW's x * (1 - lr wd) before the step)."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-2,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, lb: float = 0.0, divide: bool = True) -> None:
        _check(lr, weight_decay, tuple(betas))
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay})
        self.lb, self.divide = lb, divide

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None,
             loss: torch.Tensor | None = None) -> torch.Tensor:
        loss = self.loss_of(closure, loss)
        shared = self.shared
        k = shared.get("step", 0) + 1
        shared["step"] = k
        if k == 1:
            shared["loss_avg"] = torch.zeros_like(loss)
            shared["grad_dot_w"] = torch.zeros_like(loss)
        dot = norm = grad_dot_w = torch.zeros_like(loss)
        scaled: list[list[torch.Tensor]] = []  # per group: d_k / D_k
        beta1 = self.param_groups[-1]["betas"][0]  # the loss average uses the last group's beta1
        for group in self.param_groups:
            b1, b2 = group["betas"]
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
            for p in params:
                if "grad_avg" not in self.state[p]:
                    self.state[p]["grad_avg"] = torch.zeros_like(p)
                    self.state[p]["grad_avg_sq"] = torch.zeros_like(p)
            m = [self.state[p]["grad_avg"] for p in params]
            v = [self.state[p]["grad_avg_sq"] for p in params]
            torch._foreach_mul_(m, b1)
            torch._foreach_add_(m, grads, alpha=1 - b1)
            torch._foreach_mul_(v, b2)
            torch._foreach_addcmul_(v, grads, grads, value=1 - b2)
            grad_dot_w = grad_dot_w + (1 - b1) * sum_dot(grads, params)
            denom = torch._foreach_div(v, 1 - b2**k)
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, group["eps"])
            m_over_d = torch._foreach_div(m, denom)
            scaled.append(m_over_d)
            dot = dot + sum_dot(m, params)
            norm = norm + sum_dot(m, m_over_d)
        shared["grad_dot_w"].mul_(beta1).add_(grad_dot_w)
        shared["loss_avg"].mul_(beta1).add_(loss, alpha=1 - beta1)
        for group, m_over_d in zip(self.param_groups, scaled, strict=True):
            lr, wd = group["lr"], group["weight_decay"]
            params = [p for p in group["params"] if p.grad is not None]
            rho = 1 - group["betas"][0] ** k
            c = 1 + lr * wd
            t = safe_ratio(c * (shared["loss_avg"] - rho * self.lb) + dot
                           - c * shared["grad_dot_w"], norm)
            tau = t.clamp(max=lr / rho)
            if wd > 0 and not self.divide:
                torch._foreach_mul_(params, 1 - lr * wd)
            torch._foreach_sub_(params, torch._foreach_mul(m_over_d, tau))
            if wd > 0 and self.divide:
                torch._foreach_div_(params, c)
            self.step_size = t
        return loss
