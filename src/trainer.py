"""The training loop: get batch, forward, backward, step, schedule, average, log.

Host syncs happen only every `log_every` steps and at the end of an epoch; loss and accuracy sums
accumulate on the device in between.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig
from torch import nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from src.averaging.ema import EMA
from src.compression.exchange import GradientExchange
from src.data.bundle import DataBundle
from src.data.loader import DeviceData
from src.distributed import Dist, all_sum
from src.evaluation.metrics import evaluate, evaluate_samples
from src.fast_path import FP32, FastPath
from src.pruning.masks import Masks
from src.run_log import RunLog
from src.samples import SampleRecorder

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
    """Trains `model` epoch by epoch; `on_epoch_end(state)` is called after each epoch's record.

    Workers: each optimizer step draws one batch of W x batch_size samples and worker w computes
    its gradient on the w-th slice. Simulated workers (one process) run in turn and `exchange`
    reduces their gradients; under torchrun this process is worker `dist.rank` and the exchange
    runs inside `forward_model`'s DDP communication hook. Without compression, W simulated
    workers are one pass over the whole W x batch_size batch (their mean gradient).
    masks: pruning masks, re-applied to the weights after every optimizer step.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, data: DataBundle,
                 ema: EMA | None, run_log: RunLog, seed: int, epochs: int, cfg: DictConfig,
                 on_epoch_end: Callable[[TrainState], None], batch_size: int, workers: int = 1,
                 exchange: GradientExchange | None = None, dist: Dist | None = None,
                 forward_model: nn.Module | None = None, fast: FastPath = FP32,
                 masks: Masks | None = None) -> None:
        dist = dist or Dist()
        self.fast = fast
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.data, self.ema, self.run_log = data, ema, run_log
        self.seed, self.epochs, self.on_epoch_end = seed, epochs, on_epoch_end
        self.grad_clip = cfg.grad_clip
        self.log_every, self.progress = max(1, cfg.log_every), cfg.progress
        self.train_eval_every = cfg.train_eval_every
        self.full_train_eval = cfg.full_train_eval
        self.history_names = dict(cfg.history_names)
        self.track_splits = list(cfg.track_splits) if cfg.track_samples else []
        self.samples: SampleRecorder | None = None
        self._val_hits: dict[str, torch.Tensor] = {}
        self.batch_size, self.workers = batch_size, workers
        self.exchange, self.dist, self.masks = exchange, dist, masks
        self.forward_model = forward_model if forward_model is not None else model
        self.local_workers = [dist.rank] if dist.enabled else list(range(workers))
        self.simulated = exchange is not None and not dist.enabled
        self.loss_fn = nn.CrossEntropyLoss()
        # One extra copy of the model evaluates every averaged (or best) state in turn.
        self.shadow = copy.deepcopy(model).eval() if ema is not None else None
        self.device = next(model.parameters()).device
        self.params = list(model.parameters())
        if self.simulated:  # gradients stay allocated: each worker's is copied out in turn
            for p in model.parameters():
                p.grad = torch.zeros_like(p)

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
        """Train from `state.epoch` to `self.epochs`; raises Diverged on a non-finite loss.

        On a terminal, one progress bar covers the whole run (epochs done, the run's ETA,
        samples/s); in a log file there are only the per-epoch lines.
        """
        steps = len(self.data.train)
        shown = self.progress and self.dist.is_main and sys.stderr.isatty()
        self.bar = tqdm(total=self.epochs * steps, initial=state.epoch * steps, unit="step",
                        desc="training", disable=not shown, dynamic_ncols=True, leave=False)
        if self.track_splits and self.dist.is_main:
            sizes = {split: self.split(split).num_samples for split in self.track_splits}
            self.samples = SampleRecorder(self.run_log.run_dir, self.model_names(), sizes,
                                          state.epoch)
        with self.bar, logging_redirect_tqdm():
            for epoch in range(state.epoch, self.epochs):
                t0 = time.perf_counter()
                record = self.train_epoch(epoch, state)
                record.update(self.validate(state, epoch + 1))
                if self.full_train_eval:
                    record.update(self.evaluate_train_set())
                if self.samples is not None:
                    record["track_samples_s"] = self.track_samples()
                state.epoch = epoch + 1
                epoch_s = time.perf_counter() - t0
                state.wall_s += epoch_s
                record.update(epoch_s=epoch_s, wall_s=state.wall_s)
                record.update({name: record[key] for name, key in self.history_names.items()})
                self.run_log.append(record)
                log.info(self.describe(record))
                self.on_epoch_end(state)
        return state

    def gradients(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fill .grad for one step; returns the summed loss and correct count of its samples."""
        if self.exchange is None and not self.dist.enabled:
            x = self.fast.inputs(x)
            self.fast.forward_begins()
            with self.fast.autocast():
                logits = self.forward_model(x)
                loss = self.loss_fn(logits, y)
            self.fast.backward(loss)
            return loss.detach() * y.numel(), (logits.detach().argmax(dim=1) == y).sum()
        b = self.batch_size
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for row, w in enumerate(self.local_workers):
            xs, ys = x[w * b:(w + 1) * b], y[w * b:(w + 1) * b]
            if self.simulated:
                torch._foreach_zero_([p.grad for p in self.model.parameters()])
            self.fast.forward_begins()
            with self.fast.autocast():
                logits = self.forward_model(self.fast.inputs(xs))
                loss = self.loss_fn(logits, ys)
            self.fast.backward(loss)  # under torchrun the DDP hook exchanges gradients here
            if self.simulated:
                self.exchange.capture(row)
            loss_sum += loss.detach() * ys.numel()
            correct += (logits.detach().argmax(dim=1) == ys).sum()
        if self.simulated:
            self.exchange.reduce()
        return loss_sum, correct

    def train_epoch(self, epoch: int, state: TrainState) -> dict:
        model, opt = self.model, self.optimizer
        model.train()
        gen = torch.Generator(device=self.device).manual_seed(epoch_seed(self.seed, epoch, 0))
        torch.manual_seed(epoch_seed(self.seed, epoch, 1))  # dropout and other global draws
        if self.exchange is not None:
            self.exchange.start_epoch(lambda stream: epoch_seed(self.seed, epoch, stream))
            counts_at_start = self.exchange.level_counts.clone()
            self._counts_logged = counts_at_start.tolist()
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)  # loss, correct
        needs_loss = getattr(opt, "needs_loss", False)  # Polyak-type steps (Momo, ProxSPS)
        step_sizes = torch.zeros(len(self.data.train), device=self.device) if needs_loss else None
        interval = torch.zeros(2, dtype=torch.float64, device=self.device)
        seen = interval_seen = 0
        lr = opt.param_groups[0]["lr"]
        bar, start = self.bar, self.bar.n
        t0 = time.perf_counter()
        for i, (x, y) in enumerate(self.data.train.batches(gen), start=1):
            opt.zero_grad(set_to_none=not self.simulated)
            loss_sum, correct = self.gradients(x, y)
            lr = opt.param_groups[0]["lr"]
            batch_loss = None
            if needs_loss:  # the mean over the step's W x batch_size samples, on the device
                batch_loss = all_sum(loss_sum, self.dist).float() / y.numel()
            self.fast.step(opt, self.params, self.grad_clip, loss=batch_loss)
            if step_sizes is not None:
                step_sizes[i - 1] = opt.step_size
            if self.masks is not None:
                self.masks.apply()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update()
            state.step += 1
            interval[0] += loss_sum
            interval[1] += correct
            interval_seen += y.numel()
            if i % self.log_every == 0 or i == len(self.data.train):
                loss, totals = self.log_interval(state.step, epoch, lr, interval,
                                                 interval_seen)
                sums += totals
                seen += interval_seen
                interval.zero_()
                interval_seen = 0
                bar.set_postfix_str(f"epoch {epoch + 1}/{self.epochs}, loss {loss:.4f}, "
                                    f"{seen / (time.perf_counter() - t0):.0f} samples/s")
                bar.update(start + i - bar.n)
        train_s = time.perf_counter() - t0
        train_loss, train_correct = sums.tolist()
        record = {"epoch": epoch + 1, "step": state.step, "lr": lr,
                  "train_loss": train_loss / seen, "train_acc": train_correct / seen,
                  "samples_per_s": seen / train_s, "train_epoch_time": train_s,
                  **self.norms()}
        if step_sizes is not None:  # the optimizer's adaptive step size at every step
            record["step_sizes"] = step_sizes.tolist()
            record["step_size"] = sum(record["step_sizes"]) / len(record["step_sizes"])
        if self.exchange is not None:
            ex = self.exchange
            record.update({"bits_per_element": ex.bits,
                           "bytes_per_step": ex.payload_bytes * self.workers,
                           "fp32_bytes_per_step": ex.fp32_bytes * self.workers,
                           "level_counts": (ex.level_counts - counts_at_start).tolist()})
        return record

    @torch.no_grad()
    def norms(self) -> dict[str, float]:
        """Euclidean norms of all parameters (model_norm) and of the last mini-batch gradient of
        the epoch (grad_norm), as the optimizer-benchmark records define them; one host sync."""
        grads = [p.grad for p in self.params if p.grad is not None]
        model_norm = torch.stack(torch._foreach_norm(self.params)).norm()
        grad_norm = torch.stack(torch._foreach_norm(grads)).norm() if grads else model_norm * 0
        model_norm, grad_norm = torch.stack([model_norm, grad_norm]).float().tolist()
        return {"model_norm": model_norm, "grad_norm": grad_norm}

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
        self.check_finite(loss, step)
        record = {"step": step, "epoch": epoch + 1, "lr": lr, "train_loss": loss,
                  "train_acc": correct / n}
        if self.train_eval_every and step % self.train_eval_every == 0:
            full = evaluate(self.model, self.data.train_eval, self.fast)
            record.update(full_train_loss=full["loss"], full_train_acc=full["acc"])
            self.model.train()
        if self.exchange is not None:  # level usage of this interval (the seed's bin usage)
            counts = self.exchange.level_counts.tolist()
            last = self._counts_logged or [0] * len(counts)
            record["level_counts"] = [a - b for a, b in zip(counts, last, strict=True)]
            self._counts_logged = counts
        self.run_log.append_step(record)
        return loss, totals

    def check_finite(self, loss: float, step: int) -> None:
        if not math.isfinite(loss):
            raise Diverged(f"training loss is {loss} at step {step}")

    def validate(self, state: TrainState, epoch: int) -> dict:
        """Validation metrics of the raw and every averaged model; updates the best states."""
        out = {}
        for name in self.model_names():
            module = self.module_with(None if name == RAW else self.ema.state_of(name))
            metrics, hits = evaluate_samples(module, self.data.val, self.fast)
            if self.samples is not None and "val" in self.track_splits:
                self._val_hits[name] = hits  # the per-sample record reuses this pass
            prefix = metric_prefix(name)
            out[f"{prefix}val_loss"], out[f"{prefix}val_acc"] = metrics["loss"], metrics["acc"]
            best = state.best.get(name)
            if best is None or metrics["loss"] < best["val_loss"]:
                state.best[name] = {"val_loss": metrics["loss"], "epoch": epoch,
                                    "state": {k: v.detach().clone()
                                              for k, v in self.state_of(name).items()}}
        return out

    def split(self, name: str) -> DeviceData:
        """An evaluation split: train (without augmentation), val or test."""
        return self.data.train_eval if name == "train" else getattr(self.data, name)

    def track_samples(self) -> float:
        """Append this epoch's per-sample correctness of every model on the tracked splits
        (validation reuses validate()'s pass); returns the seconds it took."""
        t0 = time.perf_counter()
        hits = {}
        for name in self.model_names():
            module = self.module_with(None if name == RAW else self.ema.state_of(name))
            for split in self.track_splits:
                hits[(name, split)] = (self._val_hits[name] if split == "val" else
                                       evaluate_samples(module, self.split(split), self.fast)[1])
        self.samples.append(hits)
        self._val_hits = {}
        return time.perf_counter() - t0

    def evaluate_train_set(self) -> dict[str, float]:
        """The raw model on the whole training set, without augmentation, and its time."""
        t0 = time.perf_counter()
        metrics = evaluate(self.model, self.data.train_eval, self.fast)
        self.model.train()
        return {"full_train_loss": metrics["loss"], "full_train_acc": metrics["acc"],
                "full_train_eval_s": time.perf_counter() - t0}

    def describe(self, r: dict) -> str:
        parts = [f"epoch {r['epoch']}/{self.epochs}", f"lr {r['lr']:.4g}",
                 f"train {r['train_loss']:.4f}/{100 * r['train_acc']:.2f}%",
                 f"val {r['val_loss']:.4f}/{100 * r['val_acc']:.2f}%"]
        parts += [f"{n} {100 * r[f'{n}/val_acc']:.2f}%" for n in self.model_names()[1:]]
        parts.append(f"{r['samples_per_s']:.0f} samples/s")
        return " | ".join(parts)
