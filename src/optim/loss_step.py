"""Base of the optimizers whose step size adapts to the loss value (Polyak-type: Momo, ProxSPS).

The trainer passes the mini-batch loss as `optimizer.step(loss=...)` when the optimizer declares
`needs_loss`, and reads `optimizer.step_size` (a 0-d tensor on the parameters' device) after each
step; both stay on the device, so no step adds a host sync.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class LossStepOptimizer(torch.optim.Optimizer):
    """An optimizer whose `step` needs the loss: `step(closure)` or `step(loss=tensor)`.

    Scalars shared by all parameters (step count, loss average) live in the state of the first
    parameter, so `state_dict()` round-trips them and a resumed run continues exactly.
    """

    needs_loss = True

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        super().__init__(params, defaults)
        self.step_size: torch.Tensor | None = None  # the last step's adaptive step size

    @property
    def shared(self) -> dict[str, Any]:
        """State shared by every parameter, kept with the first one."""
        return self.state[self.param_groups[0]["params"][0]]

    def params_with_grad(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.grad is not None]

    @staticmethod
    def loss_of(closure: Callable[[], torch.Tensor] | None,
                loss: torch.Tensor | None) -> torch.Tensor:
        """The loss from exactly one of `closure` (re-evaluated with gradients) or `loss`."""
        if (closure is None) == (loss is None):
            raise TypeError("step() needs exactly one of closure= or loss= (the mini-batch loss)")
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        return torch.as_tensor(loss).detach()


def sum_dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """sum_i <a_i, b_i> over a list of tensors, as a 0-d tensor (no host sync).

    One multi-tensor product and one reduction over the concatenation, instead of two kernels
    per parameter tensor.
    """
    if not a:
        return torch.zeros(())
    return torch.cat([p.reshape(-1) for p in torch._foreach_mul(a, b)]).sum()


def safe_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """max(num, 0) / den with den clamped away from 0 (a zero gradient gives a huge step, which
    the lr cap then bounds, instead of 0/0 = NaN)."""
    return num.clamp(min=0) / den.clamp(min=torch.finfo(den.dtype).tiny)
