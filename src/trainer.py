"""The training loop: get batch, forward, backward, step, schedule, average, log.

Host syncs happen only every `log_every` steps and at the end of an epoch; loss and accuracy sums
accumulate on the device in between.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from src.averaging.ema import EMA
from src.data.bundle import DataBundle
from src.evaluate import evaluate
from src.run_log import RunLog

log = logging.getLogger(__name__)

RAW = "model"  # name of the raw (non-averaged) model; its metrics carry no prefix


def metric_prefix(name: str) -> str:
    """'' for the raw model, '<name>/' for an averaged one (e.g. 'ema_0.9995/')."""
    return "" if name == RAW else f"{name}/"


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A seed for one epoch's randomness: a resumed run draws exactly what it would have drawn."""
    return (seed * 1_000_003 + epoch * 1_009 + stream) % (2**63)


class Diverged(Exception):
    """The training loss became NaN or infinite."""


@dataclass
class TrainState:
    """Progress of a run; everything here goes into the checkpoint."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    wall_s: float = 0.0  # training + validation time so far, summed over resumptions
    best: dict[str, dict] = field(default_factory=dict)  # name -> {val_loss, epoch, state}


def load_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a state dict into `module` in place (one multi-tensor copy)."""
    own = module.state_dict()
    with torch.no_grad():
        torch._foreach_copy_([own[k] for k in own], [state[k] for k in own])


class Trainer:
    """Trains `model` epoch by epoch; `on_epoch_end(state)` is called after each epoch's record."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, data: DataBundle,
                 ema: EMA | None, run_log: RunLog, seed: int, epochs: int, grad_clip: float | None,
                 log_every: int, progress: bool,
                 on_epoch_end: Callable[[TrainState], None]) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.data, self.ema, self.run_log = data, ema, run_log
        self.seed, self.epochs, self.grad_clip = seed, epochs, grad_clip
        self.log_every, self.progress, self.on_epoch_end = max(1, log_every), progress, on_epoch_end
        self.loss_fn = nn.CrossEntropyLoss()
        # One extra copy of the model evaluates every averaged (or best) state in turn.
        self.shadow = copy.deepcopy(model).eval() if ema is not None else None
        self.device = next(model.parameters()).device

    def model_names(self) -> list[str]:
        return [RAW] + (self.ema.names if self.ema is not None else [])

    def state_of(self, name: str) -> dict[str, torch.Tensor]:
        return self.model.state_dict() if name == RAW else self.ema.state_of(name)

    def module_with(self, state: dict[str, torch.Tensor] | None) -> nn.Module:
        """The raw model itself (state None) or the shadow copy loaded with `state`."""
        if state is None:
            return self.model
        if self.shadow is None:
            self.shadow = copy.deepcopy(self.model).eval()
        load_state(self.shadow, state)
        return self.shadow

    def fit(self, state: TrainState) -> TrainState:
        """Train from `state.epoch` to `self.epochs`; raises Diverged on a non-finite loss."""
        for epoch in range(state.epoch, self.epochs):
            t0 = time.perf_counter()
            record = self.train_epoch(epoch, state)
            record.update(self.validate(state, epoch + 1))
            state.epoch = epoch + 1
            epoch_s = time.perf_counter() - t0
            state.wall_s += epoch_s
            record.update(epoch_s=epoch_s, wall_s=state.wall_s)
            self.run_log.append(record)
            log.info(self.describe(record))
            self.on_epoch_end(state)
        return state

    def train_epoch(self, epoch: int, state: TrainState) -> dict:
        model, opt = self.model, self.optimizer
        model.train()
        gen = torch.Generator(device=self.device).manual_seed(epoch_seed(self.seed, epoch, 0))
        torch.manual_seed(epoch_seed(self.seed, epoch, 1))  # dropout and other global draws
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen = 0
        lr = opt.param_groups[0]["lr"]
        bar = tqdm(total=len(self.data.train), desc=f"epoch {epoch + 1}/{self.epochs}",
                   disable=not self.progress, leave=False, dynamic_ncols=True)
        t0 = time.perf_counter()
        for i, (x, y) in enumerate(self.data.train.batches(gen), start=1):
            logits = model(x)
            loss = self.loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
            lr = opt.param_groups[0]["lr"]
            opt.step()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update()
            state.step += 1
            loss_sum += loss.detach() * y.numel()
            correct += (logits.detach().argmax(dim=1) == y).sum()
            seen += y.numel()
            if i % self.log_every == 0:
                mean_loss = (loss_sum / seen).item()  # the one sync of a log interval
                self.check_finite(mean_loss, state.step)
                self.run_log.scalar("step/train_loss", mean_loss, state.step)
                self.run_log.scalar("step/lr", lr, state.step)
                bar.set_postfix(loss=f"{mean_loss:.4f}",
                                samples_s=f"{seen / (time.perf_counter() - t0):.0f}")
                bar.update(self.log_every)
        train_loss, train_correct = torch.stack([loss_sum, correct.float()]).tolist()
        train_s = time.perf_counter() - t0
        bar.close()
        train_loss /= seen
        self.check_finite(train_loss, state.step)
        return {"epoch": epoch + 1, "step": state.step, "lr": lr, "train_loss": train_loss,
                "train_acc": train_correct / seen, "samples_per_s": seen / train_s}

    def check_finite(self, loss: float, step: int) -> None:
        if not math.isfinite(loss):
            raise Diverged(f"training loss is {loss} at step {step}")

    def validate(self, state: TrainState, epoch: int) -> dict:
        """Validation metrics of the raw and every averaged model; updates the best states."""
        out = {}
        for name in self.model_names():
            module = self.module_with(None if name == RAW else self.ema.state_of(name))
            metrics = evaluate(module, self.data.val)
            prefix = metric_prefix(name)
            out[f"{prefix}val_loss"], out[f"{prefix}val_acc"] = metrics["loss"], metrics["acc"]
            best = state.best.get(name)
            if best is None or metrics["loss"] < best["val_loss"]:
                state.best[name] = {"val_loss": metrics["loss"], "epoch": epoch,
                                    "state": {k: v.detach().clone()
                                              for k, v in self.state_of(name).items()}}
        return out

    def describe(self, r: dict) -> str:
        parts = [f"epoch {r['epoch']}/{self.epochs}", f"lr {r['lr']:.4g}",
                 f"train {r['train_loss']:.4f}/{100 * r['train_acc']:.2f}%",
                 f"val {r['val_loss']:.4f}/{100 * r['val_acc']:.2f}%"]
        parts += [f"{n} {100 * r[f'{n}/val_acc']:.2f}%" for n in self.model_names()[1:]]
        parts.append(f"{r['samples_per_s']:.0f} samples/s")
        return " | ".join(parts)
