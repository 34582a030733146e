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


def mean_field_mlp(input_shape: tuple[int, ...], num_classes: int, width: int = 128,
                   depth: int = 5, activation: str = "gelu") -> nn.Module:
    """The study's `mlp`: `depth` hidden layers of `width`, no biases, readout / width."""
    return MeanFieldMLP(prod(input_shape), num_classes, width, depth, activation)


def perceptron(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The study's `linear` model."""
    return Perceptron(prod(input_shape), num_classes)
