"""0/1 masks over a network's prunable weights, re-applied after every optimizer step.

Prunable weights are the `weight` of every Conv2d and Linear module (first and last layer
included); biases, normalisation layers and embeddings stay dense. A keep ratio is always counted
over all prunable weights together.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils import prune

PRUNABLE = (nn.Conv2d, nn.Linear)


class Masks:
    """One mask per prunable weight of `model`, all ones at the start.

    `apply()` multiplies the weights by their masks in place (one multi-tensor op, no host sync):
    the trainer calls it after every optimizer step, so pruned weights stay exactly zero whatever
    the optimizer's momentum or weight decay do.
    """

    def __init__(self, model: nn.Module) -> None:
        self.modules = {n: m for n, m in model.named_modules() if isinstance(m, PRUNABLE)}
        if not self.modules:
            raise ValueError(f"{type(model).__name__} has no Conv2d or Linear layer to prune")
        self.names = list(self.modules)
        self.weights = [m.weight for m in self.modules.values()]
        self.masks = [torch.ones_like(w) for w in self.weights]

    @torch.no_grad()
    def apply(self) -> None:
        torch._foreach_mul_(self.weights, self.masks)

    @property
    def total(self) -> int:
        """Number of prunable weights."""
        return sum(w.numel() for w in self.weights)

    def kept(self) -> int:
        """Number of weights the masks keep (one host sync)."""
        return int(torch.stack([m.sum() for m in self.masks]).sum().item())

    def keep_ratio(self) -> float:
        return self.kept() / self.total

    def densities(self) -> dict[str, float]:
        """Kept fraction of each prunable layer's weights, by module name."""
        kept = torch.stack([m.sum() / m.numel() for m in self.masks]).tolist()
        return dict(zip(self.names, kept, strict=True))

    @contextmanager
    def installed(self) -> Iterator[list[tuple[nn.Module, str]]]:
        """Hand the masks to torch.nn.utils.prune for the duration of the block.

        Yields the (module, 'weight') pairs with the current masks installed as pruning
        re-parametrisations, so that torch's pruning functions count amounts among the weights
        still unpruned. On exit the combined masks are read back and the re-parametrisation is
        removed again: the model keeps plain parameters (state dict, EMA, DDP and deepcopy see an
        ordinary network) and pruned weights are zero.
        """
        for module, mask in zip(self.modules.values(), self.masks, strict=True):
            prune.custom_from_mask(module, "weight", mask)
        try:
            yield [(m, "weight") for m in self.modules.values()]
        finally:
            for i, module in enumerate(self.modules.values()):
                self.masks[i] = module.weight_mask.detach().clone()
                prune.remove(module, "weight")
            self.weights = [m.weight for m in self.modules.values()]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.masks, strict=True))

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if sorted(state) != sorted(self.names):
            raise ValueError(f"masks are for layers {sorted(state)[:3]}..., this model's "
                             f"prunable layers are {self.names[:3]}...")
        self.masks = [state[n].to(w.device, w.dtype) for n, w in zip(self.names, self.weights,
                                                                      strict=True)]
