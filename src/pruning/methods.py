"""Pruning methods: each shrinks a network's masks to a target keep ratio.

Every method is a callable `method(model, masks, keep, data)` built from conf/pruning/<name>.yaml
with `_target_`. It scores the weights still kept, removes the lowest-scoring ones with
torch.nn.utils.prune until `keep` x (number of prunable weights) remain, and writes the result
into `masks`. Weights already pruned stay pruned, so the same call serves one-shot pruning (from
all-ones masks) and cascades (from the previous ratio's masks). Amounts are passed to torch as
integer counts, so the achieved ratio is the target up to rounding to whole weights (whole filters
for filter pruning).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import prune

from src.data.bundle import DataBundle
from src.pruning.masks import Masks


def _to_remove(masks: Masks, keep: float) -> int:
    """How many more weights must go for `keep` of all prunable weights to remain."""
    remove = masks.kept() - round(keep * masks.total)
    if remove < 0:
        raise ValueError(f"keep ratio {keep} is above the {masks.keep_ratio():.4f} the network "
                         f"already keeps: cascades need decreasing keep ratios")
    return remove


class Magnitude:
    """Weight magnitude: |w|, global top-k over all prunable weights (torch's L1Unstructured)."""

    def __call__(self, model: nn.Module, masks: Masks, keep: float, data: DataBundle) -> None:
        remove = _to_remove(masks, keep)
        with masks.installed() as targets:
            prune.global_unstructured(targets, pruning_method=prune.L1Unstructured,
                                      amount=remove)


class Snip:
    """SNIP: |gradient x weight| of the training loss on `batches` batches, global top-k.

    The gradient is taken in training mode on a copy of the model, so the network's BatchNorm
    statistics are untouched; the batches are the first ones of the unaugmented training split.
    """

    def __init__(self, batches: int = 1) -> None:
        if batches < 1:
            raise ValueError(f"pruning.method.batches={batches}: SNIP needs at least 1 batch")
        self.batches = batches

    def __call__(self, model: nn.Module, masks: Masks, keep: float, data: DataBundle) -> None:
        remove = _to_remove(masks, keep)
        probe = copy.deepcopy(model).train()
        probe.zero_grad(set_to_none=True)
        for i, (x, y) in enumerate(data.train_eval.batches(None)):
            if i == self.batches:
                break
            F.cross_entropy(probe(x), y).backward()
        layers = dict(probe.named_modules())
        scores = {}
        for name, module in masks.modules.items():
            weight = layers[name].weight
            grad = weight.grad if weight.grad is not None else torch.zeros_like(weight)
            scores[(module, "weight")] = (grad * weight).abs().detach()
        with masks.installed() as targets:
            prune.global_unstructured(targets, pruning_method=prune.L1Unstructured,
                                      importance_scores=scores, amount=remove)


class Random:
    """Random weights: the same fraction of every layer, uniformly at random (torch's
    random_unstructured; draws from torch's global generator, which the caller seeds)."""

    def __call__(self, model: nn.Module, masks: Masks, keep: float, data: DataBundle) -> None:
        _to_remove(masks, keep)  # only checks the direction
        kept = [int(m.sum().item()) for m in masks.masks]
        with masks.installed() as targets:
            for (module, name), k in zip(targets, kept, strict=True):
                remove = k - round(keep * module.weight.numel())
                if remove > 0:
                    prune.random_unstructured(module, name, amount=remove)


class FilterL1:
    """Filter norm: whole output filters of every Conv2d by their l1 norm (torch's ln_structured,
    n=1, dim=0), the same fraction of each layer.

    Linear layers stay dense, so the conv layers keep the fraction f with
    f x (conv weights) + (linear weights) = keep x (all prunable weights). Each layer keeps at
    least one filter; whole filters are allotted by largest remainder so that the total comes
    within half a filter of the target.
    """

    structured = True  # src/pruning/export.py removes its zero filters

    def __call__(self, model: nn.Module, masks: Masks, keep: float, data: DataBundle) -> None:
        _to_remove(masks, keep)
        convs = [i for i, m in enumerate(masks.modules.values()) if isinstance(m, nn.Conv2d)]
        if not convs:
            raise ValueError("filter_l1 prunes Conv2d filters and this model has none: use "
                             "pruning=magnitude")
        sizes = [masks.weights[i][0].numel() for i in convs]  # weights per filter
        current = [int((masks.masks[i].flatten(1).sum(1) > 0).sum().item()) for i in convs]
        dense = masks.total - sum(masks.weights[i].numel() for i in convs)
        conv_target = keep * masks.total - dense
        fraction = min(1.0, max(0.0, conv_target / sum(masks.weights[i].numel() for i in convs)))
        ideal = [fraction * masks.weights[i].shape[0] for i in convs]
        filters = [max(1, math.floor(v)) for v in ideal]
        total = sum(f * s for f, s in zip(filters, sizes, strict=True))
        for j in sorted(range(len(convs)), key=lambda j: ideal[j] - math.floor(ideal[j]),
                        reverse=True):
            if total + sizes[j] / 2 <= conv_target and filters[j] < current[j]:
                filters[j] += 1
                total += sizes[j]
        with masks.installed() as targets:
            for j, i in enumerate(convs):
                remove = current[j] - min(filters[j], current[j])
                if remove > 0:
                    module, name = targets[i]
                    prune.ln_structured(module, name, amount=remove, n=1, dim=0)
