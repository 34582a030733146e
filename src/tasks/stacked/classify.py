"""The stacked engine of classify runs: K runs of one network, dataset and batch size trained as
one (src/engine/stack.py), each with its own seed, data order and augmentation, dropout draws,
optimizer hyperparameters, learning-rate schedule and EMA decays.

One `advance` is one optimizer step of every slot. Per step the host only hands out batches (each
slot draws its own from its own generator, as its solo run does) and counts; the losses, learning
rates and EMA weights stay on the device. A slot's log interval and its epoch's end run its solo
trainer's own code (src/engine/trainer.py: log_interval, end_epoch) on the slot's network, copied
out of the stack: the records, validation, best states, checkpoints and final evaluation are an
ordinary run's.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from src.averaging.stacked import StackedEMA
from src.data.augment import correct
from src.data.bundle import DataBundle
from src.data.loader import Draw
from src.engine.fast_path import FastPath
from src.engine.stack import Stack
from src.engine.trainer import Diverged, Trainer, epoch_seed
from src.lifecycle.record import logging_for
from src.lifecycle.run import Outcome
from src.optim.stacked import build_stacked
from src.tasks.classify import Classify
from src.tasks.stacked.slots import Member


@dataclass
class SlotRun:
    """A classify run in a place: its task, its solo trainer (for records and evaluation) and
    where it is in its epoch."""

    member: Member
    task: Classify
    trainer: Trainer
    batches: Iterator[Draw] | None = None
    dropout: torch.Generator | None = None
    step_in_epoch: int = 0
    lrs: list[float] = field(default_factory=list)
    t_epoch: float = 0.0
    seen: int = 0
    interval_seen: int = 0
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0])  # loss sum, correct


class ClassifyStack:
    """`slots` places for classify runs like `template` (the first job's task), on `data`."""

    def __init__(self, template: Classify, slots: int, data: DataBundle) -> None:
        self.slots, self.data = slots, data
        parts = template.parts
        self.device = template.device
        self.fast: FastPath = parts.fast
        self.batch = data.train.batch_size
        self.steps = len(data.train)
        sample = torch.zeros(self.batch, *data.input_shape, device=self.device)
        self.stack = Stack(parts.model, slots, sample)
        self.opt = build_stacked(parts.optimizer, self.stack.flat)
        ema = template.ema
        self.ema = (StackedEMA(self.stack.flat, self.stack.buffers, self.stack.names,
                               self.stack.sizes, len(ema.decays)) if ema is not None else None)
        dev = self.device
        self.x = torch.zeros(slots, self.batch, *data.input_shape, device=dev)
        recipe = data.train.recipe  # soft targets: class probabilities (src/data/augment.py)
        self.y = (torch.zeros(slots, self.batch, data.num_classes, device=dev)
                  if recipe is not None and recipe.soft
                  else torch.zeros(slots, self.batch, dtype=torch.int64, device=dev))
        dtype = self.stack.flat.dtype
        self.lr = torch.zeros(self.steps, slots, dtype=dtype, device=dev)
        self.ema_w = (torch.zeros(self.steps, slots, len(ema.decays), dtype=torch.float64,
                                  device=dev) if ema is not None else None)
        self.clip = torch.full((slots,), float("inf"), dtype=dtype, device=dev)
        self.clips = [False] * slots
        self.pos = torch.zeros(slots, dtype=torch.int64, device=dev)
        self.interval = torch.zeros(slots, 2, dtype=torch.float64, device=dev)
        self.arange = torch.arange(slots, device=dev)
        self.runs: list[SlotRun | None] = [None] * slots

    # -- places -----------------------------------------------------------------------------

    def admit(self, slot: int, member: Member) -> None:
        task = member.task
        assert isinstance(task, Classify)
        trainer = task.trainer(member.life.run_log, member.life.saver(task))
        self.runs[slot] = SlotRun(member, task, trainer)
        p = task.parts
        self.stack.load(slot, p.model)
        self.opt.load_slot(slot, p.optimizer, list(p.model.parameters()))
        if self.ema is not None:
            self.ema.load_slot(slot, task.ema)
        clip = task.cfg.trainer.grad_clip
        self.clip[slot] = float(clip) if clip else float("inf")
        self.clips[slot] = bool(clip)

    @property
    def clipping(self) -> bool:
        """Whether a slot clips its gradient (known on the host: no sync)."""
        return any(self.clips)

    def vacate(self, slot: int) -> None:
        self.runs[slot] = None
        self.clips[slot] = False
        self.lr[:, slot] = 0  # an empty place computes but never moves

    def store(self, slot: int, everything: bool = True) -> None:
        """Copy slot `slot` out of the stack into its run's own objects (everything: also the
        optimizer state and the averages, at an epoch's end)."""
        run = self.runs[slot]
        assert run is not None
        p = run.task.parts
        self.stack.store(slot, p.model)
        if everything:
            self.opt.store_slot(slot, p.optimizer, list(p.model.parameters()))
            if self.ema is not None:
                ema = run.task.ema
                self.ema.store_slot(slot, ema, ema.updates + run.step_in_epoch)

    # -- training ---------------------------------------------------------------------------

    def start_epoch(self, slot: int) -> None:
        """The slot's epoch draws (data order and augmentation, dropout) and its schedule."""
        run = self.runs[slot]
        assert run is not None
        task, seed = run.task, run.task.cfg.seed
        epoch = task.state.epoch
        run.batches = task.data.train.draws(
            torch.Generator(device=self.device).manual_seed(epoch_seed(seed, epoch, 0)))
        run.dropout = (torch.Generator(device=self.device).manual_seed(epoch_seed(seed, epoch, 1))
                       if self.stack.sites else None)
        group, scheduler = task.parts.optimizer.param_groups[0], task.parts.scheduler
        run.lrs = []
        with warnings.catch_warnings():  # the slot's own optimizer never steps: the stack's does
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            for _ in range(self.steps):  # the lr of each step, as the solo loop reads it
                run.lrs.append(group["lr"])
                scheduler.step()
        self.lr[:, slot] = torch.tensor(run.lrs, dtype=self.lr.dtype)
        if self.ema_w is not None:
            self.ema_w[:, slot] = StackedEMA.weights(task.ema, self.steps)
        self.pos[slot] = 0
        run.step_in_epoch = run.seen = run.interval_seen = 0
        run.sums = [0.0, 0.0]
        run.t_epoch = time.perf_counter()

    def advance(self) -> list[tuple[int, Outcome | BaseException]]:
        """One optimizer step of every slot (see the module docstring)."""
        active = [(k, r) for k, r in enumerate(self.runs) if r is not None]
        for k, run in active:
            if run.batches is None:
                self.start_epoch(k)
        # each slot's own draws, one batch built for all (empty places keep their last one)
        draws = [next(run.batches) for _, run in active]
        if len(active) == self.slots:
            self.data.train.assemble(draws, out=(self.x.view(-1, *self.x.shape[2:]),
                                                 self.y.view(-1, *self.y.shape[2:])))
        else:
            x, y = self.data.train.assemble(draws)
            rows = [k for k, _ in active]
            self.x[rows] = x.view(-1, *self.x.shape[1:])
            self.y[rows] = y.view(len(rows), *self.y.shape[1:])
        stack, slots, batch = self.stack, self.slots, self.batch
        masks = (stack.masks(batch, [r.dropout if r is not None else None for r in self.runs])
                 if stack.sites else None)
        stack.zero_grad()
        with self.fast.autocast():
            logits = stack.forward(self.x, masks)
            losses = F.cross_entropy(logits.reshape(slots * batch, -1),
                                     self.y.reshape(slots * batch, *self.y.shape[2:]),
                                     reduction="none").view(slots, batch).mean(1)
        losses.sum().backward()
        grad = stack.grad
        with torch.no_grad():
            if self.clipping:
                norm = grad.norm(dim=1)  # each slot's whole gradient, as clip_grad_norm_'s
                grad.mul_(torch.where(torch.isfinite(self.clip),
                                      (self.clip / (norm + 1e-6)).clamp(max=1.0),
                                      1.0).view(-1, 1))
            self.opt.step(grad, self.lr[self.pos, self.arange])
            if self.ema is not None:
                self.ema.update(self.ema_w[self.pos, self.arange])
            self.pos.add_(1).remainder_(self.steps)  # empty places wrap around
            right = correct(logits.detach(), self.y)
            # the solo loop sums loss * samples in float32, then adds it to a float64 interval
            self.interval += torch.stack([(losses.detach() * batch).double(), right.double()],
                                         dim=1)
        return self.after_step(active)

    def after_step(self, active: list[tuple[int, SlotRun]]) -> list[tuple[int, Outcome]]:
        ended: list[tuple[int, Outcome]] = []
        for k, run in active:
            with logging_for(run.member.job.run_dir):
                how = self.count_step(k, run)
            if how is not None:
                ended.append((k, how))
        return ended

    def count_step(self, k: int, run: SlotRun) -> Outcome | None:
        """The slot's side of a step: its log interval and its epoch's end when due; how its
        run ended, if it did."""
        state, settings = run.task.state, run.trainer.settings
        run.step_in_epoch += 1
        state.step += 1
        run.interval_seen += self.batch
        last = run.step_in_epoch == self.steps
        if not (run.step_in_epoch % settings.log_every == 0 or last):
            return None
        if settings.train_eval_every:
            self.store(k, everything=False)  # its interval evaluates the slot's network
        try:
            _, totals = run.trainer.log_interval(state.step, state.epoch,
                                                 run.lrs[run.step_in_epoch - 1],
                                                 self.interval[k], run.interval_seen)
        except Diverged as e:
            return Outcome("diverged", error=str(e))
        loss_sum, correct = totals.tolist()
        run.sums[0] += loss_sum
        run.sums[1] += correct
        run.seen += run.interval_seen
        run.interval_seen = 0
        self.interval[k] = 0
        return self.end_epoch(k) if last else None

    def end_epoch(self, slot: int) -> Outcome | None:
        """The slot's epoch record, validation and checkpoint (its solo trainer's end_epoch);
        the run's final evaluation once it has trained every epoch."""
        run = self.runs[slot]
        assert run is not None
        self.store(slot)
        task, trainer = run.task, run.trainer
        train_s = time.perf_counter() - run.t_epoch
        flat, grad = self.stack.flat[slot], self.stack.grad[slot]
        record = trainer.epoch_record(task.state.epoch, task.state.step, run.lrs[-1],
                                      run.sums, run.seen, train_s,
                                      self.stack.rows(flat), self.stack.rows(grad))
        trainer.end_epoch(record, task.state, run.t_epoch)
        run.batches = None
        if task.state.epoch >= trainer.settings.epochs:
            return task.conclude(trainer)
        return None
