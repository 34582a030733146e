"""Learning-rate schedules with the exact semantics of the weight-averaging study.

Every schedule is a `LambdaLR` stepped once per optimizer step. Per-epoch schedules read the epoch
as `step // steps_per_epoch`, so their learning rate changes only at epoch boundaries, exactly as if
they were stepped per epoch. Milestones are given for `reference_epochs` and scale with `epochs`.
All schedules accept a linear warm-up factor step/W for step < W (default W = 0: none).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


@dataclass
class Schedule:
    """Multiplicative lr factor as a function of the optimizer step (0-based)."""

    steps_per_epoch: int
    epochs: int
    warmup_steps: int = 0

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / self.warmup_steps
        return self.factor(step)

    def factor(self, step: int) -> float:
        return 1.0


@dataclass
class Cosine(Schedule):
    def factor(self, step: int) -> float:
        span = max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * (step - self.warmup_steps) / span))


@dataclass
class Linear(Schedule):
    def factor(self, step: int) -> float:
        span = max(1, self.total_steps - self.warmup_steps)
        return max(0.0, (self.total_steps - step) / span)


@dataclass
class MultiStep(Schedule):
    milestones: tuple[int, ...] = ()  # epochs, already scaled
    gamma: float = 0.1

    def factor(self, step: int) -> float:
        # bisect_right: the drop applies from the milestone epoch on (torch's MultiStepLR).
        return self.gamma ** bisect_right(self.milestones, step // self.steps_per_epoch)


@dataclass
class Step(Schedule):
    step_epochs: int = 2
    gamma: float = 0.97

    def factor(self, step: int) -> float:
        return self.gamma ** ((step // self.steps_per_epoch) // self.step_epochs)


def _check(steps_per_epoch: int, epochs: int, warmup_steps: int) -> None:
    if steps_per_epoch < 1 or epochs < 1:
        raise ValueError(f"schedule needs steps_per_epoch >= 1 and epochs >= 1, got "
                         f"{steps_per_epoch} and {epochs}")
    if not 0 <= warmup_steps <= steps_per_epoch * epochs:
        raise ValueError(f"scheduler.warmup_steps={warmup_steps} must lie in "
                         f"0..{steps_per_epoch * epochs} (the run's total steps)")


def constant(optimizer: Optimizer, steps_per_epoch: int, epochs: int,
             warmup_steps: int = 0) -> LambdaLR:
    """Factor 1 (after the optional warm-up)."""
    _check(steps_per_epoch, epochs, warmup_steps)
    return LambdaLR(optimizer, Schedule(steps_per_epoch, epochs, warmup_steps))


def cosine(optimizer: Optimizer, steps_per_epoch: int, epochs: int,
           warmup_steps: int = 0) -> LambdaLR:
    """0.5 * (1 + cos(pi * (step - W) / (T - W))), T = steps_per_epoch * epochs."""
    _check(steps_per_epoch, epochs, warmup_steps)
    return LambdaLR(optimizer, Cosine(steps_per_epoch, epochs, warmup_steps))


def linear(optimizer: Optimizer, steps_per_epoch: int, epochs: int,
           warmup_steps: int = 0) -> LambdaLR:
    """max(0, (T - step) / (T - W)), T = steps_per_epoch * epochs."""
    _check(steps_per_epoch, epochs, warmup_steps)
    return LambdaLR(optimizer, Linear(steps_per_epoch, epochs, warmup_steps))


def scale_milestones(milestones: list[int], reference_epochs: int,
                     epochs: int) -> tuple[int, ...]:
    """The milestone epochs of a `reference_epochs` schedule for a run of `epochs`.

    Each milestone goes to the nearest epoch of m * epochs / reference (halves round up), kept
    within 1..epochs-1 so that every drop happens, and drops stay distinct and in order while
    the run has room for them: 90, 135 of 180 give 1, 1 for 2 epochs, 1, 2 for 3, 3, 5 for 6.
    A 1-epoch run has no later epoch to drop at and keeps its learning rate.
    """
    if reference_epochs < 1 or sorted(milestones) != list(milestones) or (
            milestones and not 0 < milestones[0] <= milestones[-1] < reference_epochs):
        raise ValueError(f"scheduler.milestones={list(milestones)} must increase within "
                         f"1..{reference_epochs - 1} (scheduler.reference_epochs - 1)")
    last = epochs - 1
    scaled = [min(max(math.floor(m * epochs / reference_epochs + 0.5), 1), max(last, 1))
              for m in milestones]
    if len(scaled) <= last:  # room for distinct drops: push clashes later, then back in range
        for i in range(1, len(scaled)):
            scaled[i] = max(scaled[i], scaled[i - 1] + 1)
        for i in reversed(range(len(scaled))):
            scaled[i] = min(scaled[i], last - (len(scaled) - 1 - i))
    return tuple(scaled)


def multistep(optimizer: Optimizer, steps_per_epoch: int, epochs: int,
              milestones: list[int], reference_epochs: int, gamma: float,
              warmup_steps: int = 0) -> LambdaLR:
    """lr x gamma at each milestone epoch, scaled to the run's length by scale_milestones."""
    _check(steps_per_epoch, epochs, warmup_steps)
    scaled = scale_milestones(list(milestones), reference_epochs, epochs)
    return LambdaLR(optimizer, MultiStep(steps_per_epoch, epochs, warmup_steps, scaled, gamma))


def step(optimizer: Optimizer, steps_per_epoch: int, epochs: int, step_epochs: int,
         gamma: float, warmup_steps: int = 0) -> LambdaLR:
    """lr x gamma^floor(epoch / step_epochs)."""
    _check(steps_per_epoch, epochs, warmup_steps)
    return LambdaLR(optimizer, Step(steps_per_epoch, epochs, warmup_steps, step_epochs, gamma))
