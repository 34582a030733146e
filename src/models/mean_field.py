"""Networks of the regimes-of-SGD study: no biases, N(0, 1) weights, explicit scale factors.

Every pre-activation is divided by sqrt(fan_in) and every activation is rescaled so that
E[phi(z)^2] = 1 for z ~ N(0, 1); the readout of the MLP is divided by the width h (mean-field
scaling), that of the perceptron by sqrt(d). The scale factors live in forward, so the weights
themselves stay O(1) and plain SGD's learning rate has the meaning the study gives it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise
from math import prod

import torch
from torch import Tensor, nn
from torch.nn import functional as F

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh}


def second_moment(phi: Callable[[Tensor], Tensor], points: int = 101) -> float:
    """E[phi(z)^2] for z ~ N(0, 1), by Gauss-Hermite quadrature (exact for polynomials of degree
    < 2 * points; relu's kink costs ~1e-6)."""
    import numpy as np

    nodes, weights = np.polynomial.hermite_e.hermegauss(points)
    z = torch.from_numpy(nodes)
    values = phi(z).double() ** 2
    return float((torch.from_numpy(weights) * values).sum() / math.sqrt(2 * math.pi))


class MeanFieldMLP(nn.Module):
    """(N, ...) -> flatten -> `depth` x [x W^T / sqrt(fan_in), phi / sqrt(E phi^2)] -> readout / h.

    Output (N, num_classes); the regimes task uses num_classes = 1.
    """

    def __init__(self, in_features: int, num_classes: int, width: int, depth: int,
                 activation: str) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation} is not available: use one of "
                             f"{', '.join(ACTIVATIONS)}")
        if depth < 1 or width < 1:
            raise ValueError(f"depth={depth}, width={width}: use depth >= 1 and width >= 1")
        self.width = width
        self.phi = ACTIVATIONS[activation]
        self.phi_norm = 1.0 / math.sqrt(second_moment(self.phi))
        sizes = [in_features] + [width] * depth
        self.hidden = nn.ParameterList(
            nn.Parameter(torch.randn(n_out, n_in)) for n_in, n_out in pairwise(sizes))
        self.readout = nn.Parameter(torch.randn(num_classes, width))

    def forward(self, x: Tensor) -> Tensor:
        h = x.flatten(1)
        for w in self.hidden:
            h = self.phi(h @ w.t() / math.sqrt(w.shape[1])) * self.phi_norm
        return h @ self.readout.t() / self.width


class Perceptron(nn.Module):
    """f(x) = w . x / sqrt(d), w ~ N(0, I_d); output (N, num_classes)."""

    width = 1  # the temperature T = dt / (bs * h) of a perceptron uses h = 1

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, in_features))

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        return x @ self.weight.t() / math.sqrt(x.shape[1])


class ScaledConv(nn.Module):
    """A bias-free N(0, 1) convolution whose output is divided by sqrt(fan_in) (k * sqrt(c_in)
    for a dense kernel, k for a depthwise one), with TensorFlow's "SAME" padding (the seed's
    Haiku): ceil(size / stride) outputs, the odd padding pixel on the bottom and right."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1,
                 depthwise: bool = False) -> None:
        super().__init__()
        self.groups = c_in if depthwise else 1
        if depthwise and c_out != c_in:
            raise ValueError(f"a depthwise convolution keeps its {c_in} channels, not {c_out}")
        self.weight = nn.Parameter(torch.randn(c_out, c_in // self.groups, k, k))
        self.k, self.stride = k, stride
        self.scale = 1.0 / math.sqrt(k * k * (c_in // self.groups))

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size in (x.shape[3], x.shape[2]):  # F.pad takes the last dimension first
            total = max((-(-size // self.stride) - 1) * self.stride + self.k - size, 0)
            pads += [total // 2, total - total // 2]
        x = F.pad(x, pads)
        return F.conv2d(x, self.weight, stride=self.stride, groups=self.groups) * self.scale


class InvertedResidual(nn.Module):
    """1x1 to 3x the channels, depthwise k x k (stride s), 1x1 to `c_out` without activation;
    (x + r) / sqrt(2) where the shapes allow a residual."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, act: Callable) -> None:
        super().__init__()
        mid = round(3.0 * c_in)
        self.expand = ScaledConv(c_in, mid, 1)
        self.depthwise = ScaledConv(mid, mid, k, stride, depthwise=True)
        self.project = ScaledConv(mid, c_out, 1)
        self.act = act
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        r = self.project(self.act(self.depthwise(self.act(self.expand(x)))))
        return (x + r) / math.sqrt(2.0) if self.residual else r


class MnasCNN(nn.Module):
    """The study's `mnas` CNN for cifar_animal (NCHW input), widths scaled by h.

    5x5 stride-2 stem to 4h channels, depthwise 5x5, 1x1 to 2h; inverted residual blocks to h
    (stride 2), h, 3h (stride 2), 3h; 1x1 to 20h; average pooling; a readout divided by its
    fan-in 20h. Bias-free with N(0, 1) weights like MeanFieldMLP (the seed's readout has a bias;
    the spec's networks have none), activations normalised to unit second moment.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int,
                 activation: str) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation} is not available: use one of "
                             f"{', '.join(ACTIVATIONS)}")
        if width < 1:
            raise ValueError(f"width={width}: use width >= 1")
        self.width = width
        phi, norm = ACTIVATIONS[activation], 1.0 / math.sqrt(second_moment(ACTIVATIONS[activation]))
        self.act = lambda z: phi(z) * norm
        h = width
        self.stem = nn.ModuleList([ScaledConv(in_channels, 4 * h, 5, 2),
                                   ScaledConv(4 * h, 4 * h, 5, 1, depthwise=True),
                                   ScaledConv(4 * h, 2 * h, 1)])
        self.blocks = nn.ModuleList([
            InvertedResidual(2 * h, h, 5, 2, self.act), InvertedResidual(h, h, 5, 1, self.act),
            InvertedResidual(h, 3 * h, 5, 2, self.act),
            InvertedResidual(3 * h, 3 * h, 5, 1, self.act)])
        self.head = ScaledConv(3 * h, 20 * h, 1)
        self.readout = nn.Parameter(torch.randn(num_classes, 20 * h))

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.stem:
            x = self.act(conv(x))
        for block in self.blocks:
            x = block(x)
        x = self.act(self.head(x)).mean(dim=(2, 3))
        return x @ self.readout.t() / self.readout.shape[1]


def mnas_cnn(input_shape: tuple[int, ...], num_classes: int, width: int = 16,
             activation: str = "gelu") -> nn.Module:
    """The study's `mnas` CNN on (C, H, W) images; `width` is h."""
    if len(input_shape) != 3:
        raise ValueError(f"model=mnas needs images (C, H, W), not inputs of shape "
                         f"{tuple(input_shape)}: use it with dataset=cifar_animal")
    return MnasCNN(input_shape[0], num_classes, width, activation)


def mean_field_mlp(input_shape: tuple[int, ...], num_classes: int, width: int = 128,
                   depth: int = 5, activation: str = "gelu") -> nn.Module:
    """The study's `mlp`: `depth` hidden layers of `width`, no biases, readout / width."""
    return MeanFieldMLP(prod(input_shape), num_classes, width, depth, activation)


def perceptron(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The study's `linear` model."""
    return Perceptron(prod(input_shape), num_classes)
