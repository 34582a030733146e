"""Seed 004's own methods: SiPP (weights), PFP (filters) and ALDS (low rank).

They are called like the methods of src/pruning/methods.py, `method(model, masks, keep, data)`,
with the same keep-ratio semantics: `keep` x (all prunable weights) remain. SiPP and PFP score
with the sensitivities of src/pruning/sensitivity.py on `samples` training points. ALDS
changes the architecture and returns its plan ({layer: [rank, subspaces]}), which the
experiment stores in the cell's checkpoint to rebuild the factorised network on resume.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from src.data.bundle import DataBundle
from src.pruning import lowrank
from src.pruning.graph import chains, channel_layer
from src.pruning.masks import Masks
from src.pruning.methods import _to_remove
from src.pruning.sensitivity import (
    appearance_order,
    bisect_eps,
    channel_sensitivity,
    draw_until_distinct,
    expected_unique,
    largest_remainder,
    layer_sensitivities,
    log_term,
    sample_complexity,
)

VARIANTS = ("rand", "det")


class _SensitivityMethod:
    """The settings SiPP and PFP share: the data subset, the variant and the bound's constants."""

    def __init__(self, samples: int = 128, variant: str = "rand", delta: float = 1e-16,
                 c: float = 3.0) -> None:
        if not isinstance(samples, int) or samples < 1:
            raise ValueError(f"pruning.method.samples={samples}: use an integer >= 1")
        if variant not in VARIANTS:
            raise ValueError(f"pruning.method.variant={variant}: use rand (importance sampling) "
                             f"or det (the deterministic variant)")
        if not 0.0 < delta < 1.0 or c <= 0:
            raise ValueError(f"pruning.method.delta={delta}, c={c}: use 0 < delta < 1 and c > 0")
        self.samples, self.variant, self.delta, self.c = samples, variant, delta, c


def _global_top(values: list[Tensor], k: int) -> list[Tensor]:
    """Boolean masks (shaped like `values`) of the k largest entries over all of them; entries
    set to -1 are taken only after every other."""
    flat = torch.cat([v.flatten() for v in values])
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    chosen[flat.topk(k).indices] = True
    return [c.view_as(v) for c, v in zip(chosen.split([v.numel() for v in values]), values,
                                         strict=True)]


def _install(masks: Masks, keep_masks: list[Tensor]) -> None:
    with masks.installed() as targets:
        for (module, name), new in zip(targets, keep_masks, strict=True):
            prune.custom_from_mask(module, name, new.to(module.weight.dtype))


class SiPP(_SensitivityMethod):
    """Sensitivity-informed provable pruning of weights.

    rand: every output neuron's weights are sampled with replacement with probability
    proportional to their sensitivity (max over positions and points); the number of distinct
    weights each neuron keeps comes from the sample complexity m = 3 (6 + 2 eps) alpha S / eps^2
    of a neuron with sensitivity sum S, with one error eps for all neurons of all layers: the
    smallest eps the budget allows, i.e. the allocation minimising the worst layer's error bound.
    A neuron is sampled until it has its quota of distinct weights; kept weights are scaled by
    count / (m p), the importance-sampling estimate of the neuron's pre-activation.
    det: the weights with the largest sensitivity (mean over positions, max over points), global
    top-k, unscaled.
    """

    def __call__(self, model: nn.Module, masks: Masks, keep: float, data: DataBundle) -> None:
        _to_remove(masks, keep)
        budget = round(keep * masks.total)
        reduction = "mean" if self.variant == "det" else "max"
        sens, positions = layer_sensitivities(model, masks.modules, data, self.samples, reduction)
        scores = [sens[n] * m for n, m in zip(masks.names, masks.masks, strict=True)]
        if self.variant == "det":
            keep_masks = self._top(scores, masks, budget)
        else:
            keep_masks = self._sample(scores, masks, positions, budget)
        _install(masks, keep_masks)

    @staticmethod
    def _top(scores: list[Tensor], masks: Masks, budget: int) -> list[Tensor]:
        return _global_top([torch.where(m > 0, s, -1.0)
                            for s, m in zip(scores, masks.masks, strict=True)], budget)

    def _sample(self, scores: list[Tensor], masks: Masks, positions: dict[str, int],
                budget: int) -> list[Tensor]:
        rows = [s.reshape(s.shape[0], -1).double() for s in scores]
        sums = [r.sum(1) for r in rows]
        probs = [r / s.clamp(min=1e-300)[:, None] for r, s in zip(rows, sums, strict=True)]
        coeffs = [log_term(w, positions[n], self.delta, self.c) * s
                  for n, w, s in zip(masks.names, masks.weights, sums, strict=True)]
        nnz = torch.cat([(r > 0).sum(1) for r in rows])

        def quotas(eps: float) -> Tensor:
            return torch.cat([expected_unique(p, sample_complexity(c, eps))
                              for p, c in zip(probs, coeffs, strict=True)]).minimum(nnz)

        eps = bisect_eps(lambda e: float(quotas(e).sum()), budget)
        counts = largest_remainder(quotas(eps), nnz, budget).split([len(r) for r in rows])
        keep_masks = []
        for p_layer, quota_layer, weight, mask in zip(probs, counts, masks.weights, masks.masks,
                                                      strict=True):
            kept = torch.zeros(p_layer.shape, dtype=torch.bool, device=weight.device)
            scale = torch.ones(p_layer.shape, dtype=weight.dtype, device=weight.device)
            for i, quota in enumerate(quota_layer.tolist()):
                count, draws = draw_until_distinct(p_layer[i], quota)
                hit = count > 0
                kept[i] = hit
                scale[i, hit] = (count[hit] / (draws * p_layer[i, hit])).to(weight.dtype)
            with torch.no_grad():
                weight.mul_(scale.view_as(weight))
            keep_masks.append(kept.view_as(mask))
        return _fill(keep_masks, masks, budget)


def _fill(keep_masks: list[Tensor], masks: Masks, budget: int) -> list[Tensor]:
    """Top up to `budget` with the largest-magnitude unpruned weights not yet kept (weights
    without sensitivity on the data subset, when the budget exceeds the sensitive ones)."""
    short = budget - sum(int(k.sum()) for k in keep_masks)
    if short <= 0:
        return keep_masks
    add = _global_top([torch.where((m > 0) & ~k, w.detach().abs(), -1.0)
                       for k, m, w in zip(keep_masks, masks.masks, masks.weights, strict=True)],
                      short)
    return [k | a for k, a in zip(keep_masks, add, strict=True)]


class PFP(_SensitivityMethod):
    """Provable filter pruning: input channels of every groups=1 layer by their sensitivity.

    A channel's sensitivity is the largest share it has in any output of the layer on the data
    subset (src/pruning/sensitivity.py). Layer l keeps the expected number of distinct channels
    among m_l = 3 (6 + 2 eps) alpha_l S_l / eps^2 draws (S_l: the layer's sensitivity sum), with
    one eps for all layers, the smallest the budget allows. rand: channels are drawn with
    replacement with probability proportional to their sensitivity until the layer has its
    count, and kept channels are scaled by count / (m p); det: the most sensitive channels,
    unscaled. A channel a layer no longer reads is a dead filter of the layer that produced it
    when that layer feeds nothing else (src/pruning/graph.py): that filter is pruned too, and
    counted in the budget, so the exported network (src/pruning/export.py) loses both.
    """

    structured = True  # src/pruning/export.py removes the channels it prunes

    def __call__(self, model: nn.Module, masks: Masks, keep: float, data: DataBundle) -> None:
        _to_remove(masks, keep)
        budget = round(keep * masks.total)
        index = {n: i for i, n in enumerate(masks.names)}
        layers = [n for n, m in masks.modules.items() if channel_layer(m)]
        sens, positions = layer_sensitivities(model, {n: masks.modules[n] for n in layers}, data,
                                              self.samples, "max")
        producer_of = {c.consumer: c.producer for c in chains(model).values()
                       if c.consumer in index and c.producer in index}
        # per (row, input channel) kept weights, rows x channels
        grid = {n: masks.masks[index[n]].reshape(masks.masks[index[n]].shape[0],
                                                 masks.masks[index[n]].shape[1], -1).sum(-1)
                for n in masks.names}
        plans = {n: self._order(channel_sensitivity(masks.modules[n], sens[n]) *
                                (grid[n].sum(0) > 0)) for n in layers}
        coeff = {n: log_term(masks.weights[index[n]], positions[n], self.delta, self.c) *
                 float(plans[n][1].sum()) for n in layers}
        alive = {n: int((grid[n].sum(0) > 0).sum()) for n in layers}
        probs_of = {n: plans[n][1] / plans[n][1].sum().clamp(min=1e-300) for n in layers}

        def channels(eps: float) -> dict[str, int]:
            out = {}
            for n in layers:
                probs = probs_of[n]
                m = sample_complexity(torch.tensor(coeff[n], dtype=torch.float64), eps)
                out[n] = int(min(alive[n], max(1, round(float(expected_unique(probs, m))))))
            return out

        def selection(counts: dict[str, int]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
            cols = {}
            for n in masks.names:
                kept = torch.zeros(grid[n].shape[1], dtype=torch.bool, device=grid[n].device)
                if n in counts:
                    kept[plans[n][0][:counts[n]]] = True
                else:
                    kept |= grid[n].sum(0) > 0
                cols[n] = kept
            rows = {n: torch.ones(grid[n].shape[0], dtype=torch.bool, device=grid[n].device)
                    for n in masks.names}
            for consumer, producer in producer_of.items():
                rows[producer] = rows[producer] & cols[consumer]
            return rows, cols

        def kept(counts: dict[str, int]) -> float:
            rows, cols = selection(counts)
            return float(sum(grid[n][rows[n]][:, cols[n]].sum() for n in masks.names))

        eps = bisect_eps(lambda e: kept(channels(e)), budget)
        counts = self._top_up(channels(eps), alive, kept, budget)
        rows, cols = selection(counts)
        new = []
        for n, mask in zip(masks.names, masks.masks, strict=True):
            rest = [1] * (mask.dim() - 2)
            keep_mask = (mask > 0) & rows[n].view(-1, 1, *rest) & cols[n].view(1, -1, *rest)
            new.append(keep_mask)
            if self.variant == "rand" and n in counts:
                self._scale(masks.weights[index[n]], plans[n], counts[n])
        _install(masks, new)

    @staticmethod
    def _top_up(counts: dict[str, int], alive: dict[str, int],
                kept: Callable[[dict[str, int]], float], budget: int) -> dict[str, int]:
        """One more channel at a time (the layer keeping the smallest fraction first) while the
        budget allows: rounding, and channels without sensitivity on the data subset when the
        budget exceeds the sensitive ones."""
        grew = True
        while grew:
            grew = False
            for n in sorted(counts, key=lambda n: counts[n] / alive[n]):
                if counts[n] < alive[n]:
                    trial = {**counts, n: counts[n] + 1}
                    if kept(trial) <= budget:
                        counts, grew = trial, True
        return counts

    def _order(self, sens: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        """Channels in the order they are kept (det: by sensitivity; rand: by first appearance
        among draws with probability proportional to sensitivity), the sensitivities, and
        (rand) the draws with each channel's first appearance in them."""
        sens = sens.double()
        if self.variant == "det" or sens.sum() <= 0:
            return sens.argsort(descending=True, stable=True), sens, None
        order, seq, first = appearance_order(sens / sens.sum())
        return order, sens, (seq, first)

    @staticmethod
    def _scale(weight: Tensor, plan: tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None],
               n: int) -> None:
        """Scale the kept input channels by count / (m p): the draws up to the n-th distinct
        channel's first appearance."""
        order, sens, drawn = plan
        if drawn is None:
            return
        seq, first = drawn
        probs = sens / sens.sum()
        draws = min(len(seq), int(first[order[n - 1]]) + 1)
        count = torch.bincount(seq[:draws], minlength=len(probs)).double()
        scale = torch.where(count > 0, count / (draws * probs).clamp(min=1e-300), 1.0)
        with torch.no_grad():
            weight.mul_(scale.to(weight.dtype).view(1, -1, *([1] * (weight.dim() - 2))))


class ALDS:
    """Low-rank compression: every groups=1 Conv2d and Linear layer factorised by truncated SVD
    (src/pruning/lowrank.py), ranks minimising the worst layer's relative error within the
    budget. Counts the factor layers' weights against keep x (the dense network's prunable
    weights); factorises a dense network only (mode=retrain)."""

    structural = True  # new layers: the experiment rebuilds them from the returned plan
    structured = True

    def __init__(self, subspaces: int = 1) -> None:
        if not isinstance(subspaces, int) or subspaces < 1:
            raise ValueError(f"pruning.method.subspaces={subspaces}: use an integer >= 1")
        self.subspaces = subspaces

    def __call__(self, model: nn.Module, masks: Masks, keep: float,
                 data: DataBundle) -> lowrank.Plan:
        if masks.kept() != masks.total:
            raise ValueError("alds factorises a dense network and this one is pruned: use "
                             "pruning.mode=retrain")
        layers = {n: m for n, m in masks.modules.items() if channel_layer(m)}
        rest = masks.total - sum(m.weight.numel() for m in layers.values())
        plan, _ = lowrank.allocate(layers, round(keep * masks.total), self.subspaces, rest)
        lowrank.apply_plan(model, plan)
        return plan
