"""Exponential moving averages of a model's weights, several decays in one run.

Semantics of timm's ModelEmaV2 (the weight-averaging study): the averages start as copies of the
model at step 0 and, after every optimizer step, every floating-point entry of the state dict
(BatchNorm running statistics included) moves as ema <- decay * ema + (1 - decay) * model; integer
buffers are copied. The EMA never influences training, so any number of decays can be tracked in
one run. Each decay costs one multi-tensor lerp over the model's tensors per step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def ema_name(decay: float) -> str:
    """The name of an averaged model in metrics and checkpoints, e.g. 0.9995 -> 'ema_0.9995'."""
    return f"ema_{float(decay)!r}"


class EMA:
    """Averages of `model`'s state dict for each decay in `decays`.

    warmup: optional {"gamma": g, "power": p}: timm ModelEmaV3's warm-up. Update t (1-based)
    uses min(decay, 1 - (1 + (t - 1) / g) ** -p): the first update copies the model (decay 0),
    as timm's does when given the update count. None keeps the decay fixed (ModelEmaV2).
    """

    def __init__(self, model: nn.Module, decays: Sequence[float],
                 warmup: dict | None = None) -> None:
        decays = [float(d) for d in decays]
        for d in decays:
            if not 0.0 <= d < 1.0:
                raise ValueError(f"averaging.decays contains {d}: each decay must lie in [0, 1)")
        if len(set(decays)) != len(decays):
            raise ValueError(f"averaging.decays={decays} repeats a decay: list each one once")
        self.decays = decays
        self.names = [ema_name(d) for d in decays]
        self.warmup = dict(warmup) if warmup else None
        self.updates = 0
        state = model.state_dict()  # detached views that share storage with the live model
        self.keys = list(state)
        self._float_idx = [i for i, k in enumerate(self.keys) if state[k].is_floating_point()]
        self._other_idx = [i for i, k in enumerate(self.keys) if not state[k].is_floating_point()]
        self._src = [state[k] for k in self.keys]
        self.averages = {n: [t.detach().clone() for t in self._src] for n in self.names}
        # The per-step tensor lists, built once: update() runs after every optimizer step.
        self._src_f = [self._src[i] for i in self._float_idx]
        self._src_o = [self._src[i] for i in self._other_idx]
        self._avg_f = {n: [a[i] for i in self._float_idx] for n, a in self.averages.items()}
        self._avg_o = {n: [a[i] for i in self._other_idx] for n, a in self.averages.items()}

    def decay_at(self, decay: float, t: int) -> float:
        """The decay applied at update number t (1-based)."""
        if self.warmup is None:
            return decay
        warm = 1.0 - (1.0 + (t - 1) / self.warmup["gamma"]) ** -self.warmup["power"]
        return min(decay, max(warm, 0.0))

    @torch.no_grad()
    def update(self) -> None:
        """Fold the model's current weights into every average (call after each optimizer step)."""
        self.updates += 1
        for decay, name in zip(self.decays, self.names, strict=True):
            weight = 1.0 - self.decay_at(decay, self.updates)
            torch._foreach_lerp_(self._avg_f[name], self._src_f, weight)
            if self._src_o:
                torch._foreach_copy_(self._avg_o[name], self._src_o)

    def state_of(self, name: str) -> dict[str, torch.Tensor]:
        """The averaged model `name` as a state dict (shares storage with the average)."""
        return dict(zip(self.keys, self.averages[name], strict=True))

    def state_dict(self) -> dict:
        return {"updates": self.updates, "decays": self.decays,
                "averages": {n: self.state_of(n) for n in self.names}}

    def load_state_dict(self, state: dict) -> None:
        if [float(d) for d in state["decays"]] != self.decays:
            raise ValueError(f"checkpoint holds EMA decays {state['decays']}, "
                             f"the config asks for {self.decays}")
        self.updates = int(state["updates"])
        with torch.no_grad():
            for name in self.names:
                saved = state["averages"][name]
                torch._foreach_copy_(self.averages[name], [saved[k] for k in self.keys])
