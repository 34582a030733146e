"""FLOPs of a (masked) network, counted by PyTorch's FLOP counter.

torch.utils.flop_counter.FlopCounterMode counts the dense FLOPs of every convolution and matrix
product of one forward pass of a single sample, per module. Zero weights are not skipped by it, so
the FLOPs a pruned network keeps are counted as

    kept = (total - sum_l F_l) + sum_l F_l x d_l

where F_l is the counted FLOPs of prunable layer l (a Conv2d or Linear) and d_l the fraction of
its weights the mask keeps: each kept weight costs the same multiply-adds per output position, so
F_l x d_l is exactly the FLOPs of layer l computed sparsely. Other counted FLOPs (attention
products, for instance) are kept whole. Filter pruning zeroes whole output filters, so its d_l is
the fraction of filters kept; the next layer's input channels are not counted as removed (the
BatchNorm after a pruned filter still adds its bias), which makes the count conservative.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from src.pruning.masks import Masks


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: tuple[int, ...],
                masks: Masks) -> dict[str, float]:
    """{'flops': dense FLOPs per sample, 'flops_kept': FLOPs per sample left by the masks,
    'flops_kept_fraction': their ratio}."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    total = float(counter.get_total_flops())
    kept = total
    for name, density in masks.densities().items():
        layer = float(sum(counts.get(f"{root}.{name}", {}).values()))
        kept -= layer * (1.0 - density)
    return {"flops": total, "flops_kept": kept, "flops_kept_fraction": kept / total}
