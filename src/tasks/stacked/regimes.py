"""The stacked engine of regimes runs: K runs of one network on one binary dataset and batch
size, each with its own seed (initialisation, batch order), step dt (or temperature), scale
alpha and stop rule, trained as one (src/engine/stack.py).

One `advance` is one stretch of training between evaluation points: the slots due an evaluation
are measured on the whole training set in one batched pass (one host sync for all), each by its
solo run's own code (src/tasks/regimes.py: Regimes.observe: checkpoints placed by loss, stop
rules, observables, saving); then every slot still running takes the same number of SGD steps,
as many as bring the first of them to its next evaluation point. Each slot is evaluated at
exactly the steps its solo run would be, so its history is its solo run's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import functional_call, grad, vmap

from src.core.compile import compile_fn
from src.engine.stack import Stack
from src.lifecycle.record import logging_for
from src.lifecycle.run import Outcome
from src.models.mean_field import Perceptron
from src.regimes.losses import margin_loss_slope
from src.tasks.regimes import Regimes
from src.tasks.stacked.slots import Member


@dataclass
class SlotRun:
    """A regimes run in a place, and when it is next evaluated and saved."""

    member: Member
    task: Regimes
    next_eval: int
    t_mark: float
    last_save: float


class RegimesStack:
    """`slots` places for regimes runs like `template` (the first job's task)."""

    def __init__(self, template: Regimes, slots: int, compiled: bool = False) -> None:
        self.slots = slots
        self.phi = template.phi
        self.data = template.data
        self.bs, self.ptr = template.bs, template.ptr
        self.full_batch = self.bs == self.ptr
        sample = self.data.train_x[: self.bs]
        self.stack = Stack(template.model, slots, sample, requires_grad=False)
        dev, dtype = self.data.train_x.device, self.stack.flat.dtype
        self.alpha = torch.ones(slots, dtype=dtype, device=dev)
        self.dt = torch.zeros(slots, dtype=dtype, device=dev)
        self.f0 = torch.zeros(slots, self.ptr, dtype=dtype, device=dev)
        self.runs: list[SlotRun | None] = [None] * slots
        self.step = self.make_step(template, compiled)

    def admit(self, slot: int, member: Member) -> None:
        task = member.task
        assert isinstance(task, Regimes)
        task.prepare()
        now = time.perf_counter()
        self.runs[slot] = SlotRun(member, task, task.progress_.step, now, now)
        self.alpha[slot] = task.task.alpha
        self.dt[slot] = task.dt
        # f0 as the stack computes outputs, so that the centred output starts at exactly 0
        self.stack.load_params(slot, task.w0)
        with torch.no_grad():
            self.f0[slot] = self.stack.forward_shared(self.data.train_x)[slot].squeeze(-1)
        self.stack.load(slot, task.model)

    def vacate(self, slot: int) -> None:
        self.runs[slot] = None
        self.dt[slot] = 0  # an empty place computes but never moves

    def advance(self) -> list[tuple[int, Outcome | BaseException]]:
        ended = self.evaluate()
        running = [(k, r) for k, r in enumerate(self.runs)
                   if r is not None and k not in {e[0] for e in ended}]
        if running:
            steps = min(r.next_eval - r.task.progress_.step for _, r in running)
            self.train(running, steps)
        return ended

    def evaluate(self) -> list[tuple[int, Outcome | BaseException]]:
        """The slots at an evaluation point: one batched pass over the training set, then each
        slot's own observation (records, stop rule, saving)."""
        due = [(k, r) for k, r in enumerate(self.runs)
               if r is not None and r.task.progress_.step == r.next_eval]
        if not due:
            return []
        y = self.data.train_y
        with torch.no_grad():
            pred = self.stack.forward_shared(self.data.train_x).squeeze(-1) - self.f0
            z = self.alpha.view(-1, 1) * y * pred
            losses = self.phi(z).mean(dim=1) / self.alpha
            rows = torch.tensor([k for k, _ in due], device=pred.device)
            numbers = torch.stack([losses[rows], z[rows].min(dim=1).values], dim=1).tolist()
        ended: list[tuple[int, Outcome | BaseException]] = []
        for (k, run), (loss, min_z) in zip(due, numbers, strict=True):
            progress = run.task.progress_
            now = time.perf_counter()
            progress.wall_s += now - run.t_mark
            run.t_mark = now
            with logging_for(run.member.job.run_dir):
                outcome = self.observe(k, run, pred[k], loss, min_z)
            if outcome is not None:
                ended.append((k, outcome))
        return ended

    def observe(self, k: int, run: SlotRun, pred: Tensor, loss: float,
                min_z: float) -> Outcome | None:
        """Slot k's evaluation point, by its solo run's code; how its run ended, if it did."""
        task, life = run.task, run.member.life
        self.stack.store(k, task.model)
        save = life.saver(task)
        stop = task.observe(life.run_log, pred, loss, min_z)
        if stop is not None:
            save()
            return task.outcome(life.run_log, stop)
        if time.perf_counter() - run.last_save > task.task.save_every_s:
            save()
            run.last_save = time.perf_counter()
        run.next_eval = task.progress_.step + task.stretch()
        return None

    def train(self, running: list[tuple[int, SlotRun]], steps: int) -> None:
        """`steps` plain SGD steps of every place (empty ones have dt 0), each running slot on
        its own batches."""
        x_all = self.data.train_x
        if self.full_batch:
            blocks = torch.zeros(self.slots, steps, 0, dtype=torch.int64)
        else:
            blocks = torch.zeros(self.slots, steps, self.bs, dtype=torch.int64)
            for k, run in running:
                blocks[k] = run.task.batches.block(run.task.progress_, steps)
        blocks = blocks.to(x_all.device)
        for j in range(steps):
            self.step(self.stack.flat, blocks[:, j], self.f0, self.alpha, self.dt)
        for _, run in running:
            run.task.progress_.step += steps

    def make_step(self, template: Regimes, compiled: bool) -> Callable[..., None]:
        """step(flat, idx, f0, alpha, dt): one SGD step of every slot, w <- w - dt grad, the
        gradient of each slot's mean loss phi(alpha y pred) / alpha on its batch idx (K, B) of
        the training set (all of it in full batch). A perceptron's gradient is written out
        (phi' y x / sqrt(d), two batched products); other networks' comes from torch.func.
        torch.compile'd if `compiled`."""
        step = (self.perceptron_step(template) if isinstance(template.model, Perceptron)
                else self.functional_step())
        return compile_fn(step, dynamic=False) if compiled else step

    def perceptron_step(self, template: Regimes) -> Callable[..., None]:
        data, full = self.data, self.full_batch
        task = template.task
        slope = margin_loss_slope(task.loss, task.soft_hinge_beta)
        root_d = math.sqrt(data.train_x[0].numel())
        x_all = data.train_x.flatten(1)

        def step(flat: Tensor, idx: Tensor, f0: Tensor, alpha: Tensor, dt: Tensor) -> None:
            if full:
                out = flat @ x_all.t() / root_d  # (K, P)
                y, f0b = data.train_y, f0
            else:
                x = x_all[idx]  # (K, B, d)
                out = torch.bmm(x, flat.unsqueeze(-1)).squeeze(-1) / root_d
                y, f0b = data.train_y[idx], f0.gather(1, idx)
            coef = slope(alpha.view(-1, 1) * y * (out - f0b)) * y  # (K, B)
            g = (coef @ x_all if full else torch.bmm(coef.unsqueeze(1), x).squeeze(1))
            flat.sub_(dt.view(-1, 1) * g / (coef.shape[1] * root_d))

        return step

    def functional_step(self) -> Callable[..., None]:
        stack, phi, data, full = self.stack, self.phi, self.data, self.full_batch

        def slot_loss(row: Tensor, x: Tensor, y: Tensor, f0: Tensor, alpha: Tensor) -> Tensor:
            out = functional_call(stack.base, stack.params_of(row), (x,)).squeeze(-1)
            return phi(alpha * y * (out - f0)).mean() / alpha

        gradient = vmap(grad(slot_loss), in_dims=(0, None, None, 0, 0) if full else 0)

        def step(flat: Tensor, idx: Tensor, f0: Tensor, alpha: Tensor, dt: Tensor) -> None:
            if full:
                g = gradient(flat, data.train_x, data.train_y, f0, alpha)
            else:
                g = gradient(flat, data.train_x[idx], data.train_y[idx], f0.gather(1, idx),
                             alpha)
            flat.sub_(dt.view(-1, 1) * g)

        return step
