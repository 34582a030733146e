"""EMA averages of stacked runs: D averages of each of K slots, over the stack's flat (K, N)
parameters and its (K, ...) buffers, each slot with decays (and warm-up) of its own.

The update is src/averaging/ema.py's (ema <- ema + w (model - ema) for floating-point entries,
integer buffers copied), with the weights w = 1 - decay given per step as a (K, D) tensor;
`weights` computes a slot's weights for the coming steps from that slot's own EMA, and a slot's
averages move to and from that EMA (`load_slot`, `store_slot`), whose state_dict is then the
run's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from src.averaging.ema import EMA


class StackedEMA:
    """Averages of a stack of `flat` (K, N) parameters and `buffers` {name: (K, ...)}.

    names: the parameters' names in the order of the flat layout (their state-dict keys).
    """

    def __init__(self, flat: Tensor, buffers: dict[str, Tensor], names: list[str],
                 sizes: list[int], decays: int) -> None:
        self.src_flat, self.src_buffers = flat, buffers
        self.names, self.sizes = names, sizes
        self.flat = torch.zeros(decays, *flat.shape, dtype=flat.dtype, device=flat.device)
        self.buffers = {n: torch.zeros(decays, *b.shape, dtype=b.dtype, device=b.device)
                        for n, b in buffers.items()}
        self.floats = [n for n, b in buffers.items() if b.is_floating_point()]
        self.others = [n for n, b in buffers.items() if not b.is_floating_point()]

    @staticmethod
    def weights(ema: EMA, steps: int) -> Tensor:
        """(steps, D) float64: 1 - decay for each of the slot's next `steps` updates."""
        return torch.tensor([[1.0 - ema.decay_at(d, ema.updates + i + 1) for d in ema.decays]
                             for i in range(steps)], dtype=torch.float64)

    @torch.no_grad()
    def update(self, weights: Tensor) -> None:
        """Fold every slot's current weights into its averages; weights (K, D)."""
        w = weights.t().to(self.flat.dtype)  # (D, K)
        self.flat.lerp_(self.src_flat.detach().expand_as(self.flat), w.unsqueeze(-1))
        for name in self.floats:
            avg = self.buffers[name]
            avg.lerp_(self.src_buffers[name].expand_as(avg),
                      w.view(*w.shape, *[1] * (avg.dim() - 2)).to(avg.dtype))
        for name in self.others:
            self.buffers[name].copy_(self.src_buffers[name].expand_as(self.buffers[name]))

    @torch.no_grad()
    def load_slot(self, slot: int, ema: EMA) -> None:
        for d, name in enumerate(ema.names):
            state = ema.state_of(name)
            self.flat[d, slot] = torch.cat([state[n].reshape(-1) for n in self.names])
            for b in self.buffers:
                self.buffers[b][d, slot] = state[b]

    @torch.no_grad()
    def store_slot(self, slot: int, ema: EMA, updates: int) -> None:
        """Write slot `slot`'s averages into `ema`, whose update count becomes `updates`."""
        ema.updates = updates
        for d, name in enumerate(ema.names):
            state = ema.state_of(name)
            for n, piece in zip(self.names, self.flat[d, slot].split(self.sizes), strict=True):
                state[n].copy_(piece.view_as(state[n]))
            for b in self.buffers:
                state[b].copy_(self.buffers[b][d, slot])
