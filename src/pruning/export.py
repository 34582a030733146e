"""Pruned networks that are really smaller: a dense copy without the pruned structure, and its
measured inference speed against the unpruned network.

`export(model, masks)` returns a copy of a masked network (eval mode) whose layers hold only what
the masks keep, with the same outputs:
- A chain producer -> BatchNorm/activation -> consumer (src/pruning/graph.py) loses every channel
  that the consumer no longer reads and the producer no longer computes (PFP prunes both): the
  producer's filters, the BatchNorms' channels and the consumer's input channels go.
- Other output filters that are all zero (filter_l1) are not computed: the layer computes the
  others and places them among constant channels (the bias, or zero), which is what the masked
  layer outputs there.
- Other input channels a layer no longer reads (PFP on a layer fed by a residual sum) are
  dropped by an index_select in front of a layer with fewer input channels.
Factorised layers (ALDS) are already dense and stay as they are. Weights pruned one by one
inside kept filters stay zero: dense kernels gain nothing from them.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

import torch
from torch import Tensor, nn

from src.pruning.graph import chains, channel_layer
from src.pruning.masks import Masks


class Sliced(nn.Module):
    """`layer` on the kept input channels, its outputs placed among constant channels."""

    def __init__(self, layer: nn.Module, inputs: Tensor | None, outputs: Tensor | None,
                 out_size: int, fill: Tensor) -> None:
        super().__init__()
        self.layer = layer
        self.dim = 1 if isinstance(layer, nn.Conv2d) else -1
        self.register_buffer("inputs", inputs)
        self.register_buffer("outputs", outputs)
        self.register_buffer("fill", fill)
        self.out_size = out_size

    def forward(self, x: Tensor) -> Tensor:
        if self.inputs is not None:
            x = x.index_select(self.dim, self.inputs)
        y = self.layer(x)
        if self.outputs is None:
            return y
        shape = list(y.shape)
        shape[self.dim] = self.out_size
        view = [1] * y.dim()
        view[self.dim] = self.out_size
        out = self.fill.view(view).expand(shape).clone()
        return out.index_copy_(self.dim % y.dim(), self.outputs, y)


def _alive(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Output filters and input channels with at least one kept weight."""
    return mask.flatten(1).any(1), mask.transpose(0, 1).flatten(1).any(1)


def _slice_layer(layer: nn.Module, out_idx: Tensor, in_idx: Tensor, mask: Tensor) -> nn.Module:
    weight = (layer.weight.detach() * mask)[out_idx][:, in_idx]
    if isinstance(layer, nn.Conv2d):
        new = nn.Conv2d(len(in_idx), len(out_idx), layer.kernel_size, stride=layer.stride,
                        padding=layer.padding, dilation=layer.dilation,
                        bias=layer.bias is not None, padding_mode=layer.padding_mode)
    else:
        new = nn.Linear(len(in_idx), len(out_idx), bias=layer.bias is not None)
    new = new.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if layer.bias is not None:
            new.bias.copy_(layer.bias.detach()[out_idx])
    return new


def _slice_norm(norm: nn.Module, keep: Tensor) -> None:
    idx = keep.nonzero().flatten()
    for name in ("weight", "bias"):
        p = getattr(norm, name)
        if p is not None:
            setattr(norm, name, nn.Parameter(p.detach()[idx].clone()))
    for name in ("running_mean", "running_var"):
        b = getattr(norm, name)
        if b is not None:
            setattr(norm, name, b[idx].clone())
    norm.num_features = len(idx)


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


@torch.no_grad()
def export(model: nn.Module, masks: Masks) -> nn.Module:
    """A dense copy of the masked `model` without its pruned channels (eval mode)."""
    out = copy.deepcopy(model).eval()
    layers = {n: m for n, m in masks.modules.items() if channel_layer(m)}
    mask_of = dict(zip(masks.names, masks.masks, strict=True))
    alive = {n: _alive(mask_of[n]) for n in layers}
    logical_out = {n: torch.ones_like(alive[n][0]) for n in layers}
    logical_in = {n: torch.ones_like(alive[n][1]) for n in layers}
    for chain in chains(model).values():
        p, c = chain.producer, chain.consumer
        if p not in layers or c not in layers:
            continue
        keep = alive[c][1] | alive[p][0]
        if bool(keep.all()) or not bool(keep.any()):
            continue
        logical_out[p] &= keep
        logical_in[c] &= keep
        for norm in chain.norms:
            _slice_norm(out.get_submodule(norm), keep)
    for name, layer in layers.items():
        alive_out, alive_in = alive[name]
        computed = alive_out & logical_out[name]
        if not bool(computed.any()):
            computed = logical_out[name].clone()  # a layer with nothing kept computes zeros
            computed[computed.nonzero().flatten()[1:]] = False
        needed = alive_in & logical_in[name]
        if not bool(needed.any()):
            needed = logical_in[name].clone()
            needed[needed.nonzero().flatten()[1:]] = False
        if bool(computed.all()) and bool(needed.all()):
            continue
        new = _slice_layer(layer, computed.nonzero().flatten(), needed.nonzero().flatten(),
                           mask_of[name])
        gather = None if needed.equal(logical_in[name]) else \
            needed[logical_in[name]].nonzero().flatten()
        scatter, fill = None, torch.zeros(0)
        if not computed.equal(logical_out[name]):
            scatter = computed[logical_out[name]].nonzero().flatten()
            bias = layer.bias.detach() if layer.bias is not None else \
                torch.zeros(len(computed), dtype=layer.weight.dtype, device=layer.weight.device)
            fill = torch.where(computed, 0.0, bias)[logical_out[name]]
        if gather is None and scatter is None:
            _replace(out, name, new)
        else:
            _replace(out, name, Sliced(new, gather, scatter, int(logical_out[name].sum()),
                                       fill.to(layer.weight.device)))
    return out


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def compare_speed(reference: nn.Module, model: nn.Module, input_shape: tuple[int, ...],
                  device: torch.device, batch: int, pairs: int, repeats: int = 3
                  ) -> dict[str, Any]:
    """Inference time of `model` against `reference` on one batch of random inputs, measured in
    alternating pairs (which one runs first alternates too), each time the best of `repeats`
    forward passes: the speed-up is the median over pairs of t_reference / t_model, with its
    smallest and largest pair."""
    x = torch.randn(batch, *input_shape, device=device)
    nets = [reference.eval(), model.eval()]

    def timed(net: nn.Module) -> float:
        best = float("inf")
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            net(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - t0)
        return best

    for net in nets:  # warm-up
        timed(net)
    ref_s, new_s, ratios = [], [], []
    for i in range(pairs):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        t = {j: timed(nets[j]) for j in order}
        ref_s.append(t[0])
        new_s.append(t[1])
        ratios.append(t[0] / t[1])
    return {"speedup": statistics.median(ratios), "speedup_min": min(ratios),
            "speedup_max": max(ratios), "inference_ms": 1e3 * statistics.median(new_s),
            "inference_ms_reference": 1e3 * statistics.median(ref_s), "speed_batch": batch,
            "speed_pairs": pairs}
