"""One run of the regimes study: step-based SGD on a binary task with a centred, alpha-scaled
network; observables at checkpoints placed by training loss (and optionally log-spaced steps).

pred(x) = f(w, x) - f(w0, x); per-sample loss phi(alpha y pred) / alpha; plain SGD
w <- w - dt grad, each step on `batch_size` fresh points (an epoch's permutation, drawn without
replacement; a new permutation when fewer than batch_size points are left); batch_size null is
full-batch gradient descent. The temperature is T = dt / (batch_size * h).

task.dynamics=gd_sde replaces the mini-batch by SGD's diffusion approximation at the same
temperature: each step is the full-batch gradient plus sigma * grad_w[(1/P) sum_mu xi_mu f_mu],
xi ~ N(0, 1) fresh each step, sigma^2 = sum_mu l'_mu^2 (1/B - 1/P) with l'_mu the derivative of
sample mu's loss with respect to its output (the seed's edm/dynamics.py, noise and all scaled by
dt as there).

A perceptron on teacher_student also records its alignment with the teacher (observables.
alignment: align, dw_par2, dw_perp2, x1_unfit), the quantities the study's theory is stated in.

history.jsonl gets one record per checkpoint the moment it is measured (a run stopped by its
wall-time budget, or killed, keeps its data); checkpoint.pt lets the same command resume.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from src.core.build import build, check_settings
from src.core.compile import compile_fn
from src.core.errors import ConfigError
from src.data.bundle import check_present
from src.engine.distributed import resolve_device
from src.lifecycle.identity import config_digest
from src.lifecycle.record import JobRecord, RunLog, logger_for
from src.lifecycle.run import Lifecycle, Outcome
from src.models.mean_field import Perceptron
from src.regimes.data import BinaryData
from src.regimes.losses import margin_loss, mean_loss
from src.regimes.observables import alignment, ntk_stats, split_stats, weight_norms

log = logging.getLogger(__name__)

SPLIT_KEYS = ("loss", "aloss", "err", "margin", "nd", "pred_mean", "pred_var")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
DYNAMICS = ("sgd", "gd_sde")


def metric_names() -> list[str]:
    """Keys of summary.json's metrics: the last checkpoint's split statistics and norms."""
    return [f"{s}_{k}" for s in ("train", "test") for k in SPLIT_KEYS] + ["norm", "dnorm"]


def step_size(dt: float, temp: float | None, bs: int, width: int) -> tuple[float, float]:
    """(dt, T) with T = dt / (bs * h); a given temperature sets dt = T * bs * h."""
    value = dt if temp is None else temp
    if not (isinstance(value, int | float) and value > 0):
        raise ConfigError(f"task.dt={dt}, task.temp={temp}: the step must be positive (set "
                          f"task.dt, or task.temp to derive dt = T * batch_size * h)")
    if temp is None:
        return float(dt), dt / (bs * width)
    return temp * bs * width, float(temp)


def check_config(cfg: DictConfig) -> None:
    for node in (cfg.model, cfg.dataset.source):  # their code imports; a factory's checks
        check_settings(node)
    task = cfg.task
    if cfg.workers != 1:
        raise ConfigError(f"workers={cfg.workers}: task=regimes runs one process; use workers=1")
    if cfg.batch_size is not None and (not isinstance(cfg.batch_size, int) or cfg.batch_size < 1):
        raise ConfigError(f"batch_size={cfg.batch_size}: use an integer >= 1, or null for "
                          f"full-batch gradient descent")
    if not task.alpha > 0:
        raise ConfigError(f"task.alpha={task.alpha}: use a positive scale (1/margin)")
    if task.dynamics not in DYNAMICS:
        raise ConfigError(f"task.dynamics={task.dynamics}: use one of {', '.join(DYNAMICS)}")
    if task.dynamics == "gd_sde" and task.compile:
        raise ConfigError("task.compile=true compiles the mini-batch gradient of "
                          "task.dynamics=sgd only: set task.compile=false for gd_sde")
    if task.dtype not in DTYPES:
        raise ConfigError(f"task.dtype={task.dtype}: use float32 or float64")
    if cfg.objective not in metric_names():
        raise ConfigError(f"objective={cfg.objective} is not a metric of task=regimes: use one "
                          f"of {', '.join(metric_names())}")
    if cfg.dataset.get("ptr") is None:
        raise ConfigError(f"dataset={cfg.dataset.name} is not a binary dataset of task=regimes: "
                          f"use dataset=teacher_student, mnist_parity or cifar_animal")
    check_present(cfg.dataset)


def loss_ladder(start: float, points: int, floor: float) -> np.ndarray:
    """Training-loss thresholds log-spaced from `start` down to start * floor (densest in log
    scale toward zero loss): a checkpoint is recorded when the loss first falls below each."""
    if points < 1:
        return np.zeros(0)
    return start * np.logspace(0, math.log10(floor), points + 1)[1:]


def step_ladder(points: int, last: int) -> np.ndarray:
    """Log-spaced integer steps in [1, last] (empty if points is 0)."""
    if points < 1:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.logspace(0, math.log10(max(last, 1)), points).round().astype(np.int64))


@dataclass
class Progress:
    """Everything that changes during training; goes into the checkpoint."""

    step: int = 0
    wall_s: float = 0.0
    next_loss: int = 0  # index into the loss ladder
    next_step: int = 0  # index into the step ladder
    pos: int = 0  # position in the current permutation
    perm: Tensor | None = None
    generator: Tensor | None = None  # generator state just after drawing `perm`
    noise: Tensor | None = None  # gd_sde: the noise generator's state


class Batches:
    """Batches of `bs` indices from permutations of range(n); resumable through its state."""

    def __init__(self, n: int, bs: int, seed: int) -> None:
        self.n, self.bs = n, bs
        self.gen = torch.Generator().manual_seed(seed)

    def next(self, progress: Progress) -> Tensor:
        if progress.perm is None or progress.pos + self.bs > self.n:
            progress.perm, progress.pos = torch.randperm(self.n, generator=self.gen), 0
            progress.generator = self.gen.get_state()
        idx = progress.perm[progress.pos:progress.pos + self.bs]
        progress.pos += self.bs
        return idx

    def block(self, progress: Progress, steps: int) -> Tensor:
        """The next `steps` batches as a (steps, bs) tensor: what `steps` calls of next draw."""
        rows, left = [], steps
        while left:
            if progress.perm is None or progress.pos + self.bs > self.n:
                progress.perm, progress.pos = torch.randperm(self.n, generator=self.gen), 0
                progress.generator = self.gen.get_state()
            take = min(left, (self.n - progress.pos) // self.bs)
            rows.append(progress.perm[progress.pos:progress.pos + take * self.bs]
                        .view(take, self.bs))
            progress.pos += take * self.bs
            left -= take
        return torch.cat(rows)


class Regimes:
    """One regimes run's parts, built from its config (the lifecycle's Task)."""

    def __init__(self, cfg: DictConfig, device: torch.device,
                 data: BinaryData | None = None) -> None:
        """data: the dataset (Regimes.build_data), when runs of one dataset share it."""
        task, ds = cfg.task, cfg.dataset
        self.cfg, self.task, self.device = cfg, task, device
        self.dtype = dtype = DTYPES[task.dtype]
        self.phi = build_loss(task)
        ptr, pte = sizes(ds)
        self.ptr, self.pte = ptr, pte
        self.data = data if data is not None else self.build_data(cfg, device)
        torch.manual_seed(cfg.seed)
        self.model = model = build(cfg.model, input_shape=self.data.input_shape,
                                   num_classes=1).to(device, dtype)
        self.bs = bs = ptr if cfg.batch_size is None else cfg.batch_size
        if bs > ptr:
            raise ConfigError(f"batch_size={bs} exceeds the {ptr} training points: use "
                              f"batch_size <= dataset.ptr, or null for full batch")
        self.width = getattr(model, "width", 1)
        self.dt, self.temp = step_size(task.dt, task.temp, bs, self.width)
        self.steps_per_epoch = ptr // bs
        self.max_step = step_budget(cfg)
        self.w0 = {k: v.detach().clone() for k, v in model.named_parameters()}
        self.progress_, self.k0 = Progress(), None
        self.batches = Batches(ptr, bs, cfg.seed + 1_000_003)
        self.noise = torch.Generator(device).manual_seed(cfg.seed + 2_000_003)

    @staticmethod
    def build_data(cfg: DictConfig, device: torch.device) -> BinaryData:
        """The run's training and test points, on `device` in the run's dtype."""
        ds = cfg.dataset
        ptr, pte = sizes(ds)
        return build(ds.source, ptr=ptr, pte=pte, seed_train=ds.seed_train,
                     seed_test=ds.seed_test).to(device, DTYPES[cfg.task.dtype])

    def facts(self) -> dict[str, Any]:
        cfg, task = self.cfg, self.task
        num_params = sum(p.numel() for p in self.model.parameters())
        log.info("%s: %s parameters, P=%d, bs=%d, dt=%g, T=%g, alpha=%g, %s on %s",
                 cfg.model._target_, f"{num_params:,}", self.ptr, self.bs, self.dt, self.temp,
                 task.alpha, task.loss, self.device)
        return {"dynamics": task.dynamics, "dt": self.dt, "temp": self.temp,
                "batch_size": self.bs, "ptr": self.ptr, "pte": self.pte, "width": self.width,
                "alpha": task.alpha, "num_params": num_params, "device": str(self.device)}

    def progress(self) -> dict[str, Any]:
        p = self.progress_
        return {"step": p.step, "t": p.step * self.dt, "train_wall_s": p.wall_s}

    def state_dict(self) -> dict[str, Any]:
        p = self.progress_
        return {"step": p.step, "wall_s": p.wall_s, "next_loss": p.next_loss,
                "next_step": p.next_step, "pos": p.pos, "perm": p.perm,
                "generator": p.generator, "noise": self.noise.get_state(),
                "model": self.model.state_dict(), "w0": self.w0, "k0": self.k0}

    def load_state_dict(self, ckpt: dict[str, Any]) -> int:
        p = self.progress_
        self.model.load_state_dict(ckpt["model"])
        for k, v in ckpt["w0"].items():
            self.w0[k] = v.to(self.device)
        p.step, p.wall_s = ckpt["step"], ckpt["wall_s"]
        p.next_loss, p.next_step = ckpt["next_loss"], ckpt["next_step"]
        p.pos, p.perm, p.generator = ckpt["pos"], ckpt["perm"], ckpt["generator"]
        p.noise = ckpt.get("noise")
        self.k0 = None if ckpt["k0"] is None else ckpt["k0"].to(self.device)
        if p.generator is not None:
            self.batches.gen.set_state(p.generator)
        if p.noise is not None:
            self.noise.set_state(p.noise)
        return p.step

    def prepare(self) -> None:
        """What training needs beside the parts: the initial outputs f0, the gradient, the
        checkpoint ladders (after a resume: the step budget is known)."""
        cfg, task, model, data = self.cfg, self.task, self.model, self.data
        self.eval_every = task.eval_every or max(1, self.steps_per_epoch // 2)
        with torch.no_grad():
            self.f0_train = functional_output(model, self.w0, data.train_x)
            self.f0_test = functional_output(model, self.w0, data.test_x)
        self.loss_points = loss_ladder(1.0 / task.alpha, task.ckpt_loss_points,
                                       task.ckpt_loss_floor)
        self.step_points = step_ladder(task.ckpt_step_points, self.max_step)
        self.n_grad = min(task.ckpt_grad_stats, self.ptr)
        # The teacher of teacher_student is e_1: the perceptron's weights are measured against it.
        self.aligned = isinstance(model, Perceptron) and cfg.dataset.name == "teacher_student"

    def measure(self, train_pred: Tensor) -> dict[str, Any]:
        """The record of one checkpoint: the split statistics, norms and observables."""
        task, data, model, progress = self.task, self.data, self.model, self.progress_
        with torch.no_grad():
            test_pred = model(data.test_x).squeeze(1) - self.f0_test
        record: dict[str, Any] = {"step": progress.step, "t": progress.step * self.dt,
                                  "epoch": progress.step / self.steps_per_epoch,
                                  "wall_s": progress.wall_s}
        record.update({f"train_{k}": v for k, v in split_stats(
            train_pred, data.train_y, task.alpha, self.phi).items()})
        record.update({f"test_{k}": v for k, v in split_stats(
            test_pred, data.test_y, task.alpha, self.phi).items()})
        record.update(weight_norms(model, self.w0))
        if self.aligned:
            record.update(alignment(model.weight, self.w0["weight"], data.train_x,
                                    data.train_y, train_pred, task.alpha))
        if self.n_grad > 0:
            n = self.n_grad
            stats, kernel, notes = ntk_stats(model, data.train_x[:n], data.train_y[:n],
                                             train_pred[:n], task.alpha, self.phi, self.k0)
            self.k0 = kernel if self.k0 is None else self.k0
            record.update(stats)
            if notes:  # the run goes on: the observable is NaN at this checkpoint, and says why
                record["notes"] = notes
                for key, why in notes.items():
                    log.warning("step %d: %s is %s", progress.step, key, why)
        return record

    def observe(self, run_log: RunLog, train_pred: Tensor, train_loss: float,
                min_z: float) -> str | None:
        """At an evaluation point (the model's training-set predictions, mean loss and least
        margin): record the checkpoints due; returns why training stops now, or None."""
        progress, losses, steps = self.progress_, self.loss_points, self.step_points
        stop = stop_reason(train_loss, min_z, progress.step, self.max_step, progress.wall_s,
                           self.task)
        due = progress.step == 0 or stop is not None
        while progress.next_loss < len(losses) and train_loss <= losses[progress.next_loss]:
            progress.next_loss, due = progress.next_loss + 1, True
        while progress.next_step < len(steps) and progress.step >= steps[progress.next_step]:
            progress.next_step, due = progress.next_step + 1, True
        if due and not (run_log.history and run_log.history[-1]["step"] == progress.step):
            record = self.measure(train_pred)
            run_log.append(record)
            log.info("step %d of at most %d: t=%.4g train_loss*alpha=%.4g nd=%d "
                     "test_err=%.4f", record["step"], self.max_step, record["t"],
                     record["train_aloss"], record["train_nd"], record["test_err"])
        return stop

    def stretch(self) -> int:
        """Steps until the next evaluation point."""
        return min(self.eval_every, self.max_step - self.progress_.step)

    def outcome(self, run_log: RunLog, stop: str) -> Outcome:
        final = run_log.history[-1]
        metrics = {k: final[k] for k in metric_names()}
        log.info("%s after %d steps", STOPPED[stop].format(task=self.task,
                                                           steps=self.max_step),
                 self.progress_.step)
        fields = {"stop_reason": stop, "checkpoints": len(run_log.history)}
        notes = observable_notes(run_log.history)
        if notes:
            fields["notes"] = notes
        return Outcome("diverged" if stop == "diverged" else "completed", metrics, fields)

    def train(self, run_log: RunLog, save: Callable[..., None]) -> Outcome:
        self.prepare()
        task, data, model, progress = self.task, self.data, self.model, self.progress_
        phi, dt, bs, ptr = self.phi, self.dt, self.bs, self.ptr
        params = list(model.parameters())
        sde = task.dynamics == "gd_sde"
        gradient = (sde_gradient(model, phi, task.alpha, bs) if sde
                    else loss_gradient(model, phi, task.alpha, task.compile))
        f0_train = self.f0_train
        last_save = t_mark = time.perf_counter()
        while True:
            with torch.no_grad():
                train_pred = model(data.train_x).squeeze(1) - f0_train
                train_loss = float(mean_loss(phi, train_pred, data.train_y, task.alpha))
                min_z = float((task.alpha * data.train_y * train_pred).min())
            progress.wall_s += time.perf_counter() - t_mark
            t_mark = time.perf_counter()
            stop = self.observe(run_log, train_pred, train_loss, min_z)
            if stop is not None:
                break
            if time.perf_counter() - last_save > task.save_every_s:
                save()
                last_save = time.perf_counter()
            for _ in range(self.stretch()):
                if sde:
                    xi = torch.randn(ptr, generator=self.noise, device=self.device,
                                     dtype=self.dtype)
                    grads = gradient(data.train_x, data.train_y, f0_train, xi)
                else:
                    idx = self.batches.next(progress) if bs < ptr else slice(None)
                    grads = gradient(data.train_x[idx], data.train_y[idx], f0_train[idx])
                with torch.no_grad():
                    torch._foreach_add_(params, grads, alpha=-dt)  # plain SGD: w -= dt * grad
                progress.step += 1
        save()
        return self.outcome(run_log, stop)


def observable_notes(history: list[dict[str, Any]]) -> dict[str, str]:
    """The summary's account of observables that were NaN at some checkpoints, and why."""
    steps: dict[str, list[int]] = {}
    why: dict[str, str] = {}
    for record in history:
        for key, text in record.get("notes", {}).items():
            steps.setdefault(key, []).append(record["step"])
            why[key] = text
    return {key: f"{why[key]} at {len(s)} of {len(history)} checkpoints (steps "
                 f"{', '.join(map(str, s[:5]))}{', ...' if len(s) > 5 else ''})"
            for key, s in steps.items()}


def step_budget(cfg: DictConfig) -> int:
    """The most steps a run of `cfg` takes: epochs passes, or task.max_step if fewer."""
    ptr, _ = sizes(cfg.dataset)
    steps = cfg.epochs * (ptr // (ptr if cfg.batch_size is None else cfg.batch_size))
    return steps if cfg.task.max_step is None else min(steps, cfg.task.max_step)


def sizes(ds: DictConfig) -> tuple[int, int]:
    """(training points, test points) of a binary dataset config, debug limits applied."""
    ptr = ds.ptr if ds.train_limit is None else min(ds.ptr, ds.train_limit)
    pte = ds.pte if ds.eval_limit is None else min(ds.pte, ds.eval_limit)
    return ptr, pte


def lifecycle(cfg: DictConfig, run_dir: Path, record: JobRecord | None) -> Lifecycle:
    """The lifecycle of the regimes run `cfg` in `run_dir`."""
    return Lifecycle(Path(run_dir), config_digest(cfg), cfg.objective, record=record,
                     logger=logger_for(cfg, run_dir, record.hydra_cfg if record else None))


def run(cfg: DictConfig, run_dir: Path, record: JobRecord | None = None) -> float:
    """Train one regimes run in `run_dir` and return its objective (see module docstring)."""
    check_config(cfg)
    device = resolve_device(cfg.device)
    return lifecycle(cfg, run_dir, record).execute(lambda ckpt: Regimes(cfg, device)).objective


def build_loss(task: DictConfig) -> Any:
    try:
        return margin_loss(task.loss, task.soft_hinge_beta)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def loss_gradient(model: nn.Module, phi: Callable[[Tensor], Tensor], alpha: float,
                  compile: bool) -> Callable[[Tensor, Tensor, Tensor], list[Tensor]]:
    """(x, y, f0) -> gradients of the batch's mean loss for the model's parameters, in order.

    compile=True traces torch.func.grad of the functional loss with torch.compile: about 3x
    fewer microseconds per step for the study's tiny models on a CPU, after ~15 s compiling.
    """
    params = dict(model.named_parameters())
    if not compile:
        def eager(x: Tensor, y: Tensor, f0: Tensor) -> list[Tensor]:
            loss = mean_loss(phi, model(x).squeeze(1) - f0, y, alpha)
            return list(torch.autograd.grad(loss, list(params.values())))
        return eager

    def loss(p: dict[str, Tensor], x: Tensor, y: Tensor, f0: Tensor) -> Tensor:
        return mean_loss(phi, functional_output(model, p, x) - f0, y, alpha)

    grad_fn = compile_fn(torch.func.grad(loss))
    weights = {k: v.detach() for k, v in params.items()}  # the same storage, updated in place

    def compiled(x: Tensor, y: Tensor, f0: Tensor) -> list[Tensor]:
        return list(grad_fn(weights, x, y, f0).values())
    return compiled


def sde_gradient(model: nn.Module, phi: Callable[[Tensor], Tensor], alpha: float,
                 bs: int) -> Callable[[Tensor, Tensor, Tensor, Tensor], list[Tensor]]:
    """(x, y, f0, xi) -> the gd_sde step direction on all P points (see the module docstring).

    sigma is a number, not differentiated: grad_w of mean loss + sigma * mean(xi * f).
    """
    params = list(model.parameters())

    def direction(x: Tensor, y: Tensor, f0: Tensor, xi: Tensor) -> list[Tensor]:
        out = model(x).squeeze(1)
        pred = out - f0
        losses = phi(alpha * y * pred) / alpha
        (dloss,) = torch.autograd.grad(losses.sum(), pred, retain_graph=True)
        sigma = (dloss.pow(2).sum() * (1.0 / bs - 1.0 / len(y))).sqrt().detach()
        return list(torch.autograd.grad(losses.mean() + sigma * (xi * out).mean(), params))
    return direction


def functional_output(model: nn.Module, weights: dict[str, Tensor], x: Tensor) -> Tensor:
    """f(weights, x) as a (N,) tensor, without touching the model's own parameters."""
    return torch.func.functional_call(model, weights, (x,)).squeeze(1)


# What each stop_reason (summary.json) means, as the run's log says it.
STOPPED = {"diverged": "diverged: the training loss is not finite",
           "zero_loss": "converged: the training loss reached 0",
           "margin": "converged: every training point is fitted with margin >= 1",
           "max_step": "stopped by its step budget ({steps} steps: task.max_step, or epochs), "
                       "not converged,",
           "max_wall": "stopped by its time budget (task.max_wall={task.max_wall} s), not "
                       "converged,"}


def stop_reason(train_loss: float, min_z: float, step: int, max_step: int, wall_s: float,
                task: DictConfig) -> str | None:
    """Why training stops now, or None: diverged, zero_loss, margin, max_step or max_wall."""
    if not (math.isfinite(train_loss) and math.isfinite(min_z)):
        return "diverged"
    if train_loss == 0.0:
        return "zero_loss"
    if task.stop_margin and min_z >= 1.0:
        return "margin"
    if step >= max_step:
        return "max_step"
    if task.max_wall is not None and wall_s >= task.max_wall:
        return "max_wall"
    return None
