"""Which layer's output channels feed only one other layer: the chains that filter pruning can
remove physically.

A chain is producer -> (BatchNorm, activation, pooling, dropout ...)* -> consumer where producer
and consumer are groups=1 Conv2d layers (or two Linear layers) and every tensor on the way has
exactly one user. Channel c of the producer then reaches nothing but input channel c of the
consumer: if the consumer ignores input channel c (its weights there are zero), filter c of the
producer and channel c of the BatchNorms between them can be removed without changing any
output. The graph is read with torch.fx; a model fx cannot trace has no chains (its filters are
then removed layer by layer, see src/pruning/export.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

CHANNELWISE_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU,
                       nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Hardswish, nn.MaxPool2d, nn.AvgPool2d,
                       nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout, nn.Identity)
CHANNELWISE_FUNCTIONS = (F.relu, torch.relu, F.relu6, F.gelu, F.silu, torch.tanh, torch.sigmoid,
                         F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.dropout)
CHANNELWISE_METHODS = ("relu", "tanh", "sigmoid")


@dataclass(frozen=True)
class Chain:
    producer: str
    consumer: str
    norms: tuple[str, ...]  # BatchNorm modules between them, whose channels go with the filters


def channel_layer(module: nn.Module | None) -> bool:
    """A layer whose input channels (features) are its weight's dim 1: a groups=1 Conv2d or a
    Linear layer."""
    if isinstance(module, nn.Conv2d):
        return module.groups == 1
    return isinstance(module, nn.Linear)


def chains(model: nn.Module) -> dict[str, Chain]:
    """Chains of `model`, by consumer name ({} if torch.fx cannot trace the model)."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception:
        return {}
    modules = dict(model.named_modules())
    found = {}
    for node in graph.nodes:
        if node.op != "call_module" or not channel_layer(modules.get(node.target)):
            continue
        consumer = modules[node.target]
        norms: list[str] = []
        prev = node.args[0] if node.args else None
        while isinstance(prev, fx.Node) and len(prev.users) == 1:
            if prev.op == "call_module" and channel_layer(modules.get(prev.target)):
                producer = modules[prev.target]
                if type(producer) is type(consumer) and _out(producer) == _in(consumer):
                    found[node.target] = Chain(prev.target, node.target, tuple(reversed(norms)))
                break
            if not _channelwise(prev, modules):
                break
            if isinstance(modules.get(prev.target), (nn.BatchNorm1d, nn.BatchNorm2d)):
                norms.append(prev.target)
            prev = prev.args[0] if prev.args else None
    return found


def _channelwise(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), CHANNELWISE_MODULES)
    if node.op == "call_function":
        return node.target in CHANNELWISE_FUNCTIONS
    return node.op == "call_method" and node.target in CHANNELWISE_METHODS


def _out(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.Conv2d) else module.out_features


def _in(module: nn.Module) -> int:
    return module.in_channels if isinstance(module, nn.Conv2d) else module.in_features
