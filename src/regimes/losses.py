"""Margin losses of the regimes study, as functions of z = alpha * y * pred.

The per-sample loss is phi(z) / alpha with phi(0) = 1, so a centred network (pred = 0 at
initialisation) starts at a training loss of exactly 1 / alpha (soft hinge: 1 + O(e^-beta)).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor
from torch.nn import functional as F


def hinge(z: Tensor) -> Tensor:
    return F.relu(1.0 - z)


def quadratic_hinge(z: Tensor) -> Tensor:
    return F.relu(1.0 - z) ** 2


def soft_hinge(z: Tensor, beta: float) -> Tensor:
    """softplus(beta (1 - z)) / beta: the hinge, smoothed over a width 1/beta."""
    return F.softplus(beta * (1.0 - z)) / beta


def mse(z: Tensor) -> Tensor:
    """(alpha pred - y)^2 = (z - 1)^2 for labels y = +-1."""
    return (1.0 - z) ** 2


def margin_loss(name: str, soft_hinge_beta: float = 20.0) -> Callable[[Tensor], Tensor]:
    """phi for `task.loss`: hinge | soft_hinge | quadratic_hinge | mse."""
    losses: dict[str, Callable[[Tensor], Tensor]] = {
        "hinge": hinge, "quadratic_hinge": quadratic_hinge, "mse": mse,
        "soft_hinge": partial(soft_hinge, beta=soft_hinge_beta)}
    if name not in losses:
        raise ValueError(f"task.loss={name} is not a loss: use one of {', '.join(losses)}")
    return losses[name]


def margin_loss_slope(name: str, soft_hinge_beta: float = 20.0) -> Callable[[Tensor], Tensor]:
    """phi' for `task.loss` (the derivative autograd takes of margin_loss(name); hinge's is 0 at
    its kink, as relu's): the hand-written gradients of stacked perceptrons use it."""
    slopes: dict[str, Callable[[Tensor], Tensor]] = {
        "hinge": lambda z: -(z < 1.0).to(z.dtype),
        "quadratic_hinge": lambda z: -2.0 * F.relu(1.0 - z),
        "mse": lambda z: -2.0 * (1.0 - z),
        "soft_hinge": lambda z: -torch.sigmoid(soft_hinge_beta * (1.0 - z))}
    if name not in slopes:
        raise ValueError(f"task.loss={name} is not a loss: use one of {', '.join(slopes)}")
    return slopes[name]


def mean_loss(phi: Callable[[Tensor], Tensor], pred: Tensor, y: Tensor, alpha: float) -> Tensor:
    """Mean over samples of phi(alpha y pred) / alpha; pred is the centred output, shape (N,)."""
    return phi(alpha * y * pred).mean() / alpha
