"""The training loop: get batch, forward, backward, step, features, schedule, log.

Host syncs happen only every `log_every` steps and at the end of an epoch; loss and accuracy sums
accumulate on the device in between. What else acts on a step (EMA, masks, the exchange's
statistics, step sizes, per-sample tracking) joins through src/engine/features.py.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from omegaconf import DictConfig
from torch import nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from src.compression.exchange import GradientExchange
from src.core.keys import RAW, metric_prefix
from src.data.augment import correct
from src.data.bundle import DataBundle
from src.engine.distributed import Dist, all_sum
from src.engine.evaluation import evaluate, evaluate_samples
from src.engine.fast_path import FP32, FastPath
from src.engine.features import Feature, State

log = logging.getLogger(__name__)


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A seed for one epoch's randomness: a resumed run draws exactly what it would have drawn."""
    return (seed * 1_000_003 + epoch * 1_009 + stream) % (2**63)


class Diverged(Exception):
    """The training loss became NaN or infinite."""


class Log(Protocol):
    """Where the trainer's records go (src/lifecycle/record.py: RunLog)."""

    def append(self, record: dict) -> None: ...

    def append_step(self, record: dict) -> None: ...


@dataclass
class TrainState:
    """Progress of a run; everything here goes into the checkpoint."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    wall_s: float = 0.0  # training + validation time so far, summed over resumptions
    best: dict[str, dict] = field(default_factory=dict)  # name -> {val_loss, epoch, state}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "wall_s": self.wall_s, "best": self.best}

    def load_state_dict(self, saved: Mapping[str, Any], device: torch.device) -> None:
        self.epoch, self.step, self.wall_s = saved["epoch"], saved["step"], saved["wall_s"]
        self.best = {name: {**b, "state": {k: v.to(device) for k, v in b["state"].items()}}
                     for name, b in saved["best"].items()}


@dataclass(frozen=True)
class TrainerSettings:
    """How the loop runs (conf/trainer/default.yaml, and the run's top-level keys)."""

    epochs: int
    batch_size: int  # per worker
    seed: int  # data order, augmentation and dropout: epoch_seed(seed, epoch, stream)
    workers: int = 1
    grad_clip: float | None = None
    log_every: int = 50
    progress: bool = True
    train_eval_every: int = 0  # steps between evaluations of the whole training set (0: never)
    full_train_eval: bool = False  # the whole training set after every epoch
    history_names: Mapping[str, str] = field(default_factory=dict)  # alias -> history key

    @classmethod
    def from_config(cls, trainer: DictConfig, *, epochs: int, batch_size: int, seed: int,
                    workers: int = 1) -> TrainerSettings:
        return cls(epochs=epochs, batch_size=batch_size, seed=seed, workers=workers,
                   grad_clip=trainer.grad_clip, log_every=max(1, trainer.log_every),
                   progress=trainer.progress, train_eval_every=trainer.train_eval_every,
                   full_train_eval=trainer.full_train_eval,
                   history_names=dict(trainer.history_names))


@dataclass
class Parts:
    """What one run trains. forward_model: what the steps call (the model itself, its DDP
    wrapper, or their compiled module); exchange: the simulated workers' gradient exchange
    (under torchrun it runs inside forward_model's DDP hook instead)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    forward_model: nn.Module | None = None
    fast: FastPath = FP32
    exchange: GradientExchange | None = None


# Keys of every epoch record, besides `<model/>val_<loss|acc>` of each model, the features' and
# full_train_eval's: the history's own grammar (trainer.history_names aliases these).
EPOCH_KEYS = ("epoch", "step", "lr", "train_loss", "train_acc", "samples_per_s",
              "train_epoch_time", "model_norm", "grad_norm", "epoch_s", "wall_s")
FULL_TRAIN_KEYS = ("full_train_loss", "full_train_acc", "full_train_eval_s")


class Trainer:
    """Trains `parts.model` epoch by epoch; `on_epoch_end(state)` is called after each epoch's
    record (the task's checkpoint).

    Workers: each optimizer step draws one batch of W x batch_size samples and worker w computes
    its gradient on the w-th slice. Simulated workers (one process) run in turn and the exchange
    reduces their gradients; under torchrun this process is worker `dist.rank`. Without
    compression, W simulated workers are one pass over the whole W x batch_size batch.
    """

    def __init__(self, parts: Parts, data: DataBundle, settings: TrainerSettings, log: Log,
                 on_epoch_end: Callable[[TrainState], None],
                 features: Sequence[Feature] = (), dist: Dist | None = None) -> None:
        self.dist = dist or Dist()
        self.parts, self.data, self.settings, self.log = parts, data, settings, log
        self.model, self.optimizer, self.scheduler = parts.model, parts.optimizer, parts.scheduler
        self.fast, self.exchange = parts.fast, parts.exchange
        self.forward_model = parts.forward_model or parts.model
        self.features = list(features)
        self.on_epoch_end = on_epoch_end
        self.averaged: dict[str, Callable[[], State]] = {}
        for feature in self.features:
            self.averaged.update(feature.models())
        self.local_workers = ([self.dist.rank] if self.dist.enabled
                              else list(range(settings.workers)))
        self.simulated = self.exchange is not None and not self.dist.enabled
        self.needs_loss = getattr(self.optimizer, "needs_loss", False)  # Momo, ProxSPS
        self.loss_fn = nn.CrossEntropyLoss()
        # One extra copy of the model evaluates every averaged (or best) state in turn.
        self.shadow = copy.deepcopy(self.model).eval() if self.averaged else None
        self.device = next(self.model.parameters()).device
        self.params = list(self.model.parameters())
        if self.simulated:  # gradients stay allocated: each worker's is copied out in turn
            for p in self.params:
                p.grad = torch.zeros_like(p)

    def model_names(self) -> list[str]:
        return [RAW, *self.averaged]

    def state_of(self, name: str) -> State:
        return self.model.state_dict() if name == RAW else self.averaged[name]()

    def module_with(self, state: State | None) -> nn.Module:
        """The raw model itself (state None) or the shadow copy loaded with `state`."""
        if state is None:
            return self.model
        if self.shadow is None:
            self.shadow = copy.deepcopy(self.model).eval()
        load_state(self.shadow, state)
        return self.shadow

    def fit(self, state: TrainState) -> TrainState:
        """Train from `state.epoch` to the settings' epochs; raises Diverged on a non-finite
        loss. On a terminal, one progress bar covers the whole run (epochs done, the run's ETA,
        samples/s); in a log file there are only the per-epoch lines."""
        steps, epochs = len(self.data.train), self.settings.epochs
        shown = self.settings.progress and self.dist.is_main and sys.stderr.isatty()
        self.bar = tqdm(total=epochs * steps, initial=state.epoch * steps, unit="step",
                        desc="training", disable=not shown, dynamic_ncols=True, leave=False)
        with self.bar, logging_redirect_tqdm():
            for epoch in range(state.epoch, epochs):
                t0 = time.perf_counter()
                self.end_epoch(self.train_epoch(epoch, state), state, t0)
        return state

    def end_epoch(self, record: dict, state: TrainState, t0: float) -> None:
        """After an epoch's training (`record`, begun at perf_counter `t0`): validation, the
        full training set, the features' keys, timing and aliases; then the record is written
        and `on_epoch_end` called (the checkpoint)."""
        view = EpochResults(self, record["epoch"])
        record.update(self.validate(state, view))
        if self.settings.full_train_eval:
            record.update(self.evaluate_train_set())
        for feature in self.features:
            record.update(feature.epoch_record(view))
        state.epoch = record["epoch"]
        epoch_s = time.perf_counter() - t0
        state.wall_s += epoch_s
        record.update(epoch_s=epoch_s, wall_s=state.wall_s)
        record.update({alias: record[key] for alias, key in self.settings.history_names.items()})
        log.info(self.describe(record))
        self.log.append(record)  # a pruner or the scheduler may stop the run here
        self.on_epoch_end(state)

    def gradients(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fill .grad for one step; returns the summed loss and correct count of its samples."""
        if self.exchange is None and not self.dist.enabled:
            x = self.fast.inputs(x)
            self.fast.forward_begins()
            with self.fast.autocast():
                logits = self.forward_model(x)
                loss = self.loss_fn(logits, y)
            self.fast.backward(loss)
            return loss.detach() * len(y), correct(logits.detach(), y)
        b = self.settings.batch_size
        loss_sum = torch.zeros((), device=self.device)
        right = torch.zeros((), dtype=torch.int64, device=self.device)
        for row, w in enumerate(self.local_workers):
            xs, ys = x[w * b:(w + 1) * b], y[w * b:(w + 1) * b]
            if self.simulated:
                torch._foreach_zero_([p.grad for p in self.params])
            self.fast.forward_begins()
            with self.fast.autocast():
                logits = self.forward_model(self.fast.inputs(xs))
                loss = self.loss_fn(logits, ys)
            self.fast.backward(loss)  # under torchrun the DDP hook exchanges gradients here
            if self.simulated:
                self.exchange.capture(row)
            loss_sum += loss.detach() * len(ys)
            right += correct(logits.detach(), ys)
        if self.simulated:
            self.exchange.reduce()
        return loss_sum, right

    def train_epoch(self, epoch: int, state: TrainState) -> dict:
        model, opt, seed = self.model, self.optimizer, self.settings.seed
        model.train()
        gen = torch.Generator(device=self.device).manual_seed(epoch_seed(seed, epoch, 0))
        torch.manual_seed(epoch_seed(seed, epoch, 1))  # dropout and other global draws
        for feature in self.features:
            feature.start_epoch(epoch, lambda stream: epoch_seed(seed, epoch, stream))
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)  # loss, correct
        interval = torch.zeros(2, dtype=torch.float64, device=self.device)
        seen = interval_seen = 0
        steps, lr = len(self.data.train), opt.param_groups[0]["lr"]
        bar, start = self.bar, self.bar.n
        t0 = time.perf_counter()
        for i, (x, y) in enumerate(self.data.train.batches(gen), start=1):
            opt.zero_grad(set_to_none=not self.simulated)
            loss_sum, right = self.gradients(x, y)
            lr = opt.param_groups[0]["lr"]
            # the mean over the step's W x batch_size samples, on the device
            batch_loss = all_sum(loss_sum, self.dist).float() / len(y) if self.needs_loss \
                else None
            self.fast.step(opt, self.params, self.settings.grad_clip, loss=batch_loss)
            for feature in self.features:
                feature.after_step(i - 1)
            self.scheduler.step()
            state.step += 1
            interval[0] += loss_sum
            interval[1] += right
            interval_seen += len(y)
            if i % self.settings.log_every == 0 or i == steps:
                loss, totals = self.log_interval(state.step, epoch, lr, interval, interval_seen)
                sums += totals
                seen += interval_seen
                interval.zero_()
                interval_seen = 0
                bar.set_postfix_str(f"epoch {epoch + 1}/{self.settings.epochs}, loss "
                                    f"{loss:.4f}, {seen / (time.perf_counter() - t0):.0f} "
                                    f"samples/s")
                bar.update(start + i - bar.n)
        return self.epoch_record(epoch, state.step, lr, sums.tolist(), seen,
                                 time.perf_counter() - t0, self.params,
                                 [p.grad for p in self.params if p.grad is not None])

    @staticmethod
    def epoch_record(epoch: int, step: int, lr: float, sums: Sequence[float], seen: int,
                     train_s: float, params: Sequence[torch.Tensor],
                     grads: Sequence[torch.Tensor]) -> dict:
        """The training part of epoch `epoch`'s (0-based) record: sums (loss sum, correct
        count) over `seen` samples in `train_s` seconds, the lr of its last step, and the norms
        of `params` and of their last gradients `grads`."""
        train_loss, train_correct = sums
        return {"epoch": epoch + 1, "step": step, "lr": lr,
                "train_loss": train_loss / seen, "train_acc": train_correct / seen,
                "samples_per_s": seen / train_s, "train_epoch_time": train_s,
                **norms(params, grads)}

    def log_interval(self, step: int, epoch: int, lr: float, interval: torch.Tensor,
                     n: int) -> tuple[float, torch.Tensor]:
        """The one host sync of a log interval: check and log the interval's mean loss.

        interval: this rank's (loss sum, correct count); n: samples of the whole step, every
        worker's shard included (each rank draws all W x batch_size and trains on its own).
        Returns the mean loss and the (loss sum, correct count) summed over ranks.
        """
        totals = all_sum(interval, self.dist)  # all ranks see the same numbers
        loss_sum, correct = totals.tolist()
        loss = loss_sum / n
        if not math.isfinite(loss):
            raise Diverged(f"training loss is {loss} at step {step}")
        record = {"step": step, "epoch": epoch + 1, "lr": lr, "train_loss": loss,
                  "train_acc": correct / n}
        every = self.settings.train_eval_every
        if every and step % every == 0:
            full = evaluate(self.model, self.data.train_eval, self.fast)
            record.update(full_train_loss=full["loss"], full_train_acc=full["acc"])
            self.model.train()
        for feature in self.features:
            record.update(feature.interval_record())
        self.log.append_step(record)
        return loss, totals

    def validate(self, state: TrainState, view: EpochResults) -> dict:
        """Validation metrics of the raw and every averaged model; updates the best states."""
        out = {}
        for name in self.model_names():
            module = self.module_with(None if name == RAW else self.state_of(name))
            metrics, hits = evaluate_samples(module, self.data.val, self.fast)
            view.seen[(name, "val")] = hits  # per-sample tracking reuses this pass
            prefix = metric_prefix(name)
            out[f"{prefix}val_loss"], out[f"{prefix}val_acc"] = metrics["loss"], metrics["acc"]
            best = state.best.get(name)
            if best is None or metrics["loss"] < best["val_loss"]:
                state.best[name] = {"val_loss": metrics["loss"], "epoch": view.epoch,
                                    "state": {k: v.detach().clone()
                                              for k, v in self.state_of(name).items()}}
        return out

    def evaluate_train_set(self) -> dict[str, float]:
        """The raw model on the whole training set, without augmentation, and its time."""
        t0 = time.perf_counter()
        metrics = evaluate(self.model, self.data.train_eval, self.fast)
        self.model.train()
        return {"full_train_loss": metrics["loss"], "full_train_acc": metrics["acc"],
                "full_train_eval_s": time.perf_counter() - t0}

    def describe(self, r: dict) -> str:
        parts = [f"epoch {r['epoch']}/{self.settings.epochs}", f"lr {r['lr']:.4g}",
                 f"train {r['train_loss']:.4f}/{100 * r['train_acc']:.2f}%",
                 f"val {r['val_loss']:.4f}/{100 * r['val_acc']:.2f}%"]
        parts += [f"{n} {100 * r[f'{n}/val_acc']:.2f}%" for n in self.averaged]
        parts.append(f"{r['samples_per_s']:.0f} samples/s")
        return " | ".join(parts)


class EpochResults:
    """The features' view of the epoch just trained (src/engine/features.py: EpochView): every
    model's per-sample correctness on a split, validation's pass reused."""

    def __init__(self, trainer: Trainer, epoch: int) -> None:
        self.trainer, self.epoch = trainer, epoch
        self.seen: dict[tuple[str, str], torch.Tensor] = {}

    def models(self) -> list[str]:
        return self.trainer.model_names()

    def split_size(self, split: str) -> int:
        return self.trainer.data.split(split).num_samples

    def hits(self, model: str, split: str) -> torch.Tensor:
        if (model, split) not in self.seen:
            t = self.trainer
            module = t.module_with(None if model == RAW else t.state_of(model))
            self.seen[(model, split)] = evaluate_samples(module, t.data.split(split), t.fast)[1]
        return self.seen[(model, split)]


@torch.no_grad()
def norms(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> dict[str, float]:
    """Euclidean norms of all parameters (model_norm) and of the last mini-batch gradient of the
    epoch (grad_norm), as the optimizer-benchmark records define them; one host sync."""
    model_norm = torch.stack(torch._foreach_norm(list(params))).norm()
    grad_norm = (torch.stack(torch._foreach_norm(list(grads))).norm() if grads
                 else model_norm * 0)
    model_norm, grad_norm = torch.stack([model_norm, grad_norm]).float().tolist()
    return {"model_norm": model_norm, "grad_norm": grad_norm}


def load_state(module: nn.Module, state: State) -> None:
    """Copy a state dict into `module` in place (one multi-tensor copy)."""
    own = module.state_dict()
    with torch.no_grad():
        torch._foreach_copy_([own[k] for k in own], [state[k] for k in own])


def history_keys(model_names: Sequence[str], features: Sequence[type[Feature]] = (),
                 full_train_eval: bool = False) -> set[str]:
    """The scalars every epoch record of a run holds: the loop's own, each model's validation
    metrics, full_train_eval's and those of these kinds of feature (see Trainer.fit)."""
    keys = set(EPOCH_KEYS) | {f"{metric_prefix(n)}val_{m}" for n in model_names
                              for m in ("loss", "acc")}
    if full_train_eval:
        keys |= set(FULL_TRAIN_KEYS)
    return keys.union(*(f.epoch_keys for f in features))
