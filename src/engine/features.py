"""What joins the training loop beside the model and its optimizer: one small interface.

A feature is an object the trainer calls at fixed points of its loop, in the order of its list
of features; each method has a do-nothing default here:

- `start_epoch(epoch, seed_of)`: before the first step of epoch `epoch` (0-based);
  `seed_of(stream)` is the epoch's seed for a random stream of the feature's own (a resumed
  run draws the same);
- `after_step(index)`: after each optimizer step (index 0.. within the epoch), before the
  learning-rate schedule moves; it must not sync with the host (no .item(), no .cpu());
- `interval_record()`: at each log interval's host sync, keys added to steps.jsonl's record;
- `epoch_record(view)`: after the epoch's validation, keys added to history.jsonl's record;
  `view` gives the epoch's per-sample correctness of every model on a split;
- `models()`: averaged models evaluated beside the raw one, as name -> state-dict getter.

The features of this framework: EMA averages, pruning masks, the simulated workers' exchange
statistics, the step sizes of loss-taking optimizers, and per-sample tracking.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import torch

from src.averaging.ema import EMA
from src.compression.exchange import GradientExchange
from src.engine.samples import SampleRecorder

State = dict[str, torch.Tensor]


class EpochView(Protocol):
    """What epoch_record sees of the epoch just trained (1-based `epoch`)."""

    epoch: int

    def models(self) -> list[str]: ...

    def split_size(self, split: str) -> int: ...

    def hits(self, model: str, split: str) -> torch.Tensor: ...


class Feature:
    """The interface; see the module docstring. Subclasses override what they use."""

    epoch_keys: tuple[str, ...] = ()  # the scalars epoch_record adds to every record

    def start_epoch(self, epoch: int, seed_of: Callable[[int], int]) -> None:
        """Before the epoch's first step."""

    def after_step(self, index: int) -> None:
        """After each optimizer step."""

    def interval_record(self) -> dict[str, Any]:
        return {}

    def epoch_record(self, view: EpochView) -> dict[str, Any]:
        return {}

    def models(self) -> dict[str, Callable[[], State]]:
        return {}


class Averages(Feature):
    """EMA averages: folded in after every step, evaluated as models of their own."""

    def __init__(self, ema: EMA) -> None:
        self.ema = ema

    def after_step(self, index: int) -> None:
        self.ema.update()

    def models(self) -> dict[str, Callable[[], State]]:
        return {name: (lambda n=name: self.ema.state_of(n)) for name in self.ema.names}


class MaskedWeights(Feature):
    """Pruning masks (anything with `apply()`), re-applied to the weights after every step."""

    def __init__(self, masks: Any) -> None:
        self.masks = masks

    def after_step(self, index: int) -> None:
        self.masks.apply()


class ExchangeStats(Feature):
    """The simulated or DDP workers' gradient exchange: its random streams follow the epoch,
    and its payload and level usage go into the records."""

    epoch_keys = ("bits_per_element", "bytes_per_step", "fp32_bytes_per_step")

    def __init__(self, exchange: GradientExchange, workers: int) -> None:
        self.exchange, self.workers = exchange, workers
        self.at_epoch_start: torch.Tensor | None = None
        self.logged: list[int] = []

    def start_epoch(self, epoch: int, seed_of: Callable[[int], int]) -> None:
        self.exchange.start_epoch(seed_of)
        self.at_epoch_start = self.exchange.level_counts.clone()
        self.logged = self.at_epoch_start.tolist()

    def interval_record(self) -> dict[str, Any]:
        """The level usage of this interval (the seed's bin usage)."""
        counts = self.exchange.level_counts.tolist()
        last = self.logged or [0] * len(counts)
        self.logged = counts
        return {"level_counts": [a - b for a, b in zip(counts, last, strict=True)]}

    def epoch_record(self, view: EpochView) -> dict[str, Any]:
        ex = self.exchange
        return {"bits_per_element": ex.bits, "bytes_per_step": ex.payload_bytes * self.workers,
                "fp32_bytes_per_step": ex.fp32_bytes * self.workers,
                "level_counts": (ex.level_counts - self.at_epoch_start).tolist()}


class StepSizes(Feature):
    """The adaptive step size of a loss-taking optimizer (Momo, ProxSPS) at every step, kept on
    the device until the epoch ends."""

    epoch_keys = ("step_size",)

    def __init__(self, optimizer: torch.optim.Optimizer, steps: int,
                 device: torch.device) -> None:
        self.optimizer = optimizer
        self.sizes = torch.zeros(steps, device=device)

    def after_step(self, index: int) -> None:
        self.sizes[index] = self.optimizer.step_size

    def epoch_record(self, view: EpochView) -> dict[str, Any]:
        sizes = self.sizes.tolist()
        return {"step_sizes": sizes, "step_size": sum(sizes) / len(sizes)}


class SampleTracking(Feature):
    """Every model's per-sample correctness on `splits`, one bit-packed row per epoch
    (src/engine/samples.py), in `run_dir`; validation's pass is reused for the val split."""

    epoch_keys = ("track_samples_s",)

    def __init__(self, run_dir: Path, splits: Iterable[str], write: bool = True) -> None:
        self.run_dir, self.splits, self.write = Path(run_dir), list(splits), write
        self.recorder: SampleRecorder | None = None

    def epoch_record(self, view: EpochView) -> dict[str, Any]:
        if not self.write:
            return {}
        t0 = time.perf_counter()
        hits = {(m, s): view.hits(m, s) for m in view.models() for s in self.splits}
        if self.recorder is None:  # its first epoch: resumed runs cut the record back to it
            sizes = {s: view.split_size(s) for s in self.splits}
            self.recorder = SampleRecorder(self.run_dir, view.models(), sizes,
                                           view.epoch - 1)
        self.recorder.append(hits)
        return {"track_samples_s": time.perf_counter() - t0}
