"""Which jobs of a sweep can share a stack, and training one group of them.

Jobs share a stack when their configs differ only in values that change neither shapes nor code
(VARYING: seeds, optimizer hyperparameters, the schedule, EMA decays, lengths, the regimes
study's dt, temperature and alpha, ...): the rest of the config, the device included, is the
group's key. A config the stacks cannot train (an optimizer without a stacked step, gradient
compression, ...) is NotStackable, with the reason, and runs as an ordinary run.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from src.compression.fused import compiler_missing
from src.core.errors import ConfigError
from src.core.keys import flatten, neutral
from src.core.memory import free_memory
from src.data.bundle import build_data
from src.engine.distributed import Dist, resolve_device
from src.engine.stack import unstackable
from src.optim.stacked import STACKED, NotStackable
from src.tasks import classify, regimes
from src.tasks.stacked.classify import ClassifyStack
from src.tasks.stacked.regimes import RegimesStack
from src.tasks.stacked.slots import Slots, StackJob, StackReport

log = logging.getLogger(__name__)

# Keys whose values may differ between the runs of one stack (and everything below them).
VARYING = ("seed", "init_seed", "epochs", "objective", "optimizer.lr", "optimizer.momentum",
           "optimizer.dampening", "optimizer.weight_decay", "optimizer.betas", "optimizer.eps",
           "scheduler", "averaging.decays", "averaging.warmup", "trainer.grad_clip",
           "trainer.log_every", "trainer.checkpoint_every", "trainer.keep_epochs",
           "trainer.train_eval_every", "trainer.history_names", "trainer.full_train_eval",
           "task.dt", "task.temp", "task.alpha", "task.max_step", "task.max_wall",
           "task.save_every_s", "task.eval_every", "task.ckpt_loss_points",
           "task.ckpt_loss_floor", "task.ckpt_step_points", "task.ckpt_grad_stats",
           "task.stop_margin", "task.compile")
# Result-neutral keys that still must agree within a stack (they decide where it runs).
SHARED = ("device", "logger", "trainer.progress")
MAX_SLOTS = 256
# compile=auto compiles the regimes step for runs of this many steps or more: the compile's ~15 s
# are repaid by ~0.4 ms a step saved (benchmarks/stacked.py)
COMPILE_FROM_STEPS = 50_000


def kind(cfg: DictConfig) -> str:
    """'classify' or 'regimes'; NotStackable (with the reason) for a config no stack trains."""
    if (cfg.get("pruning") or {}).get("method") is not None:
        raise NotStackable(f"pruning.method={cfg.pruning.method}: prune-and-retrain experiments "
                           f"run alone")
    run = str(cfg.task.run)
    if run.endswith("regimes.run"):
        if cfg.task.dynamics != "sgd":
            raise NotStackable(f"task.dynamics={cfg.task.dynamics} has no stacked step "
                               f"(stacked: sgd)")
        return "regimes"
    if not run.endswith("classify.run"):
        raise NotStackable(f"task.run={run} has no stacked engine")
    if cfg.compression.get("compressor") is not None:
        raise NotStackable("gradient compression has no stacked exchange: compression=none "
                           "stacks")
    if get_class(cfg.optimizer._target_) not in STACKED:
        raise NotStackable(f"{cfg.optimizer._target_} has no stacked step (stacked: "
                           f"torch.optim.SGD, Adam, AdamW)")
    trainer = cfg.trainer
    for key, why in (("track_samples", "per-sample tracking"), ("compile", "torch.compile")):
        if trainer[key]:
            raise NotStackable(f"trainer.{key}={trainer[key]}: {why} runs alone")
    if str(trainer.amp) == "fp16":
        raise NotStackable("trainer.amp=fp16: loss scaling runs alone (bf16 stacks)")
    return "classify"


def key(cfg: DictConfig) -> str:
    """What the jobs of one stack share: the config without VARYING and result-neutral keys
    (SHARED kept), plus the number of EMA decays and whether they warm up."""
    flat = flatten(OmegaConf.to_container(cfg, resolve=True))
    kept = {k: v for k, v in flat.items()
            if not neutral(k, VARYING) and (not neutral(k) or neutral(k, SHARED))}
    averaging = cfg.get("averaging") or {}
    kept["averaging.count"] = len(averaging.get("decays") or [])
    kept["averaging.warms"] = averaging.get("warmup") is not None
    return json.dumps(kept, sort_keys=True, default=str)


def check_slots(setting: object) -> None:
    """One-line ConfigError unless `hydra.launcher.slots` is an integer >= 1 or auto."""
    if setting != "auto" and (not isinstance(setting, int) or isinstance(setting, bool)
                              or setting < 1):
        raise ConfigError(f"hydra.launcher.slots={setting}: use an integer >= 1 or auto")


def slot_count(setting: int | str, jobs: int, per_slot: int, device: torch.device) -> int:
    """`hydra.launcher.slots`: an integer, or auto (as many as half the free memory holds, at
    most the group's jobs and MAX_SLOTS)."""
    check_slots(setting)
    if setting != "auto":
        return min(setting, jobs)
    free = free_memory(device)
    fits = max(1, int(0.5 * free / max(per_slot, 1)))
    slots = min(jobs, fits, MAX_SLOTS)
    log.info("slots=auto: %d slot(s) (about %.1f MB each; %.1f GB free on %s)", slots,
             per_slot / 2**20, free / 2**30, device)
    return slots


def slot_bytes(model: torch.nn.Module, states: int, batch_elements: int) -> int:
    """A slot's memory: its parameters with `states` more copies (gradient, optimizer state,
    averages) and buffers, plus a generous allowance for a batch's activations."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return params * (1 + states) + buffers * states + 64 * batch_elements * 4


def check_compile(setting: object) -> None:
    """One-line ConfigError unless `hydra.launcher.compile` is true, false or auto."""
    if setting not in (True, False, "auto"):
        raise ConfigError(f"hydra.launcher.compile={setting}: use true, false or auto")


def compiled(setting: bool | str, steps: int, device: torch.device) -> bool:
    """`hydra.launcher.compile` for a stack whose longest run takes up to `steps` steps: true,
    false, or auto (compile when the run is long enough to repay the compile's seconds and a
    compiler is at hand)."""
    check_compile(setting)
    if setting != "auto":
        return bool(setting)
    return steps >= COMPILE_FROM_STEPS and compiler_missing(device) is None


def run_group(jobs: list[StackJob], slots: int | str, lock_wait_s: float = 0.0,
              compile: bool | str = "auto") -> StackReport:
    """Train `jobs` (one key) as stacked runs; every job's result or error in the report."""
    first = jobs[0].cfg
    device = resolve_device(first.device)
    if kind(first) == "regimes":
        data = regimes.Regimes.build_data(first, device)
        template = regimes.Regimes(first, device, data)
        per_slot = slot_bytes(template.model, 2, template.bs * template.data.train_x[0].numel()
                              + 2 * template.ptr)
        count = slot_count(slots, len(jobs), per_slot, device)

        def build(job: StackJob, ckpt: dict | None) -> regimes.Regimes:
            return regimes.Regimes(job.cfg, device, data)

        longest = max(regimes.step_budget(job.cfg) for job in jobs)
        fast = compiled(compile, longest, device)
        log.info("stacked regimes step: %s", "torch.compile'd" if fast else "eager")
        report = Slots(jobs, count, lambda job: regimes.lifecycle(job.cfg, job.run_dir,
                                                                     job.record),
                       build, lambda: RegimesStack(template, count, fast), lock_wait_s).run()
        report.step = "compiled" if fast else "eager"
        return report
    bundle = build_data(first.dataset, first.batch_size * first.workers,
                        first.trainer.eval_batch_size, device, first.get("augment"))
    scratch = Path(os.devnull)
    template = classify.Classify(first, scratch, Dist(), device, bundle)
    sample = torch.zeros(min(2, bundle.train.batch_size), *bundle.input_shape, device=device)
    why = unstackable(template.parts.model, sample)
    if why is not None:
        name = (f"model.name={first.model.name}" if "name" in first.model
                else str(first.model._target_))
        raise NotStackable(f"{name} cannot run in a stack ({why})")
    decays = len(first.averaging.decays or [])
    per_slot = slot_bytes(template.parts.model, 3 + decays,
                          bundle.train.batch_size * int(torch.Size(bundle.input_shape).numel()))
    count = slot_count(slots, len(jobs), per_slot, device)

    def build_classify(job: StackJob, ckpt: dict | None) -> classify.Classify:
        return classify.Classify(job.cfg, job.run_dir, Dist(), device, bundle)

    return Slots(jobs, count, lambda job: classify.lifecycle(job.cfg, job.run_dir, job.record),
                 build_classify, lambda: ClassifyStack(template, count, bundle),
                 lock_wait_s).run()
