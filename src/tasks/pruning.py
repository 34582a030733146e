"""A prune-and-retrain experiment: train (or load) the reference, then one cell per repetition and
keep ratio: prune, retrain with the usual Trainer, test, write cells/<cell>.json.

Layout of a pruning run directory (one method, one network):
    reference.json             the unpruned reference's test metrics, parameters and FLOPs
    cells/rep<r>_ratio<ii>.json  one finished cell (written atomically, rank 0 alone)
    cells/rep<r>_ratio<ii>/    the cell's checkpoint.pt (model, masks, optimizer, schedule),
                               history.jsonl and TensorBoard events
    summary.json               status, cell count, prune potential (the objective)
The reference is a normal run directory: `pruning.from_run`, or, when that is null, a sibling
`reference-<config digest>` of this run directory, trained here by src.tasks.classify.run and
shared by every pruning run of the same training config (its run-directory lock keeps parallel
jobs, on one machine or several, from training it twice). Starting the same command again skips
finished cells and resumes an unfinished one from its checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch.optim.lr_scheduler import LambdaLR

from src.core.build import build, check_settings
from src.core.errors import ConfigError, one_line
from src.core.files import (
    CHECKPOINT,
    CONF,
    CONFIG,
    HYDRA_DIR,
    SUMMARY,
    kept_checkpoint,
    read_json,
    write_json_atomic,
)
from src.core.trusted_config import check_targets
from src.data.bundle import build_data, check_present
from src.engine import distributed
from src.engine.evaluation import topk_metrics
from src.engine.fast_path import FastPath
from src.engine.features import MaskedWeights
from src.engine.trainer import (
    Diverged,
    Parts,
    Trainer,
    TrainerSettings,
    TrainState,
    epoch_seed,
    load_state,
)
from src.lifecycle.checkpoint import load_checkpoint
from src.lifecycle.identity import config_digest, versions
from src.lifecycle.lock import RunLock
from src.lifecycle.record import JobRecord, RunLog, logger_for
from src.lifecycle.run import Lifecycle, Outcome
from src.pruning.export import compare_speed, export, parameters
from src.pruning.flops import count_flops
from src.pruning.lowrank import apply_plan
from src.pruning.masks import Masks
from src.pruning.ratios import keep_ratios
from src.pruning.report import prune_potential
from src.tasks.classify import run

log = logging.getLogger(__name__)

CELLS = "cells"
REFERENCE = "reference.json"
REFERENCE_WAIT_S = 7 * 24 * 3600.0  # as long as training a reference may take
SPLIT_KEYS = ("ratio_index", "repetition")  # which cells a job runs, not what a cell computes


@dataclass(frozen=True)
class Mode:
    chain: bool  # each ratio prunes the previous ratio's pruned-and-retrained network
    rewind: bool  # after pruning, the weights go back to the reference's early checkpoint


MODES = {"retrain": Mode(chain=False, rewind=False), "cascade": Mode(chain=True, rewind=False),
         "cascade_rewind": Mode(chain=True, rewind=True)}


def rewind_path(ref_dir: Path, epoch: int) -> Path:
    return ref_dir / kept_checkpoint(epoch)


def cell_name(rep: int, index: int) -> str:
    return f"rep{rep}_ratio{index:02d}"


def check_pruning(cfg: DictConfig) -> tuple[Mode, list[float]]:
    """The mode and keep ratios; a one-line ConfigError for settings the experiment cannot use."""
    p = cfg.pruning
    if p.mode not in MODES:
        raise ConfigError(f"pruning.mode={p.mode} is not a mode: use {', '.join(MODES)}")
    mode, ratios = MODES[p.mode], keep_ratios(p.keep_ratios)
    for key, low in (("repetitions", 1), ("retrain_epochs", 1), ("lr_restart_epoch", 0),
                     ("rewind_epoch", 1)):
        if not isinstance(p[key], int) or p[key] < low:
            raise ConfigError(f"pruning.{key}={p[key]} is out of range: use an integer >= {low}")
    if p.lr_restart_epoch + p.retrain_epochs > cfg.epochs:
        raise ConfigError(f"pruning.lr_restart_epoch + pruning.retrain_epochs = "
                          f"{p.lr_restart_epoch + p.retrain_epochs} runs past the training "
                          f"schedule's epochs={cfg.epochs}: lower one of them")
    if mode.rewind and p.rewind_epoch > cfg.epochs:
        raise ConfigError(f"pruning.rewind_epoch={p.rewind_epoch} is past the reference's "
                          f"epochs={cfg.epochs}: use 1..{cfg.epochs}")
    for key, count in (("ratio_index", len(ratios)), ("repetition", p.repetitions)):
        if p[key] is not None and not (isinstance(p[key], int) and 0 <= p[key] < count):
            raise ConfigError(f"pruning.{key}={p[key]} is out of range: use 0..{count - 1} "
                              f"or null for all")
    if p.ratio_index is not None and mode.chain:
        raise ConfigError(f"pruning.ratio_index splits only mode=retrain (in mode={p.mode} each "
                          f"ratio starts from the previous one): split by pruning.repetition, "
                          f"method or seed")
    if cfg.compression.get("compressor") is not None:
        raise ConfigError("pruning retrains without gradient compression: use compression=none")
    return mode, ratios


def check_config(cfg: DictConfig) -> None:
    """The experiment's one-line ConfigError (src.tasks.check_config); its reference run and
    its cells check their own configs as they start."""
    # their code imports, and a factory's own checks (src/core/build.py)
    for node in (cfg.model, cfg.dataset.source, cfg.optimizer):
        check_settings(node)
    check_pruning(cfg)
    check_present(cfg.dataset)


def reference_config(cfg: DictConfig) -> DictConfig:
    """The training config of the unpruned reference: this config with pruning=none, keeping a
    checkpoint of the rewind epoch."""
    ref = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    ref.pruning = OmegaConf.load(CONF / "pruning" / "none.yaml")
    ref.trainer.keep_epochs = [cfg.pruning.rewind_epoch]
    return ref


def record_reference(ref: DictConfig, ref_dir: Path) -> None:
    """The reference's .hydra/: its config, and the job's config-group choices with
    pruning=none, so that figures and tables read it like any run train.py made."""
    (ref_dir / HYDRA_DIR).mkdir(parents=True, exist_ok=True)
    OmegaConf.save(ref, ref_dir / CONFIG)
    if HydraConfig.initialized():
        choices = {**OmegaConf.to_container(HydraConfig.get().runtime.choices), "pruning": "none"}
        OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": choices}}}),
                       ref_dir / HYDRA_DIR / "hydra.yaml")


def ensure_reference(cfg: DictConfig, run_dir: Path, dist: distributed.Dist) -> Path:
    """The directory of the trained reference: `pruning.from_run`, or one trained here."""
    if cfg.pruning.from_run is not None:
        ref_dir = Path(str(cfg.pruning.from_run)).expanduser()
        config = ref_dir / CONFIG
        if not config.is_file() or not (ref_dir / CHECKPOINT).is_file():
            raise ConfigError(f"pruning.from_run={ref_dir} is not a trained run directory (no "
                              f".hydra/config.yaml or {CHECKPOINT}): point it at train.py's output")
        ref_cfg = OmegaConf.load(config)
        check_targets(ref_cfg, config)
        if OmegaConf.to_container(ref_cfg.model) != OmegaConf.to_container(cfg.model):
            raise ConfigError(f"pruning.from_run={ref_dir} was trained with model "
                              f"{ref_cfg.model._target_}: set model= as in that run")
        if ref_cfg.dataset.name != cfg.dataset.name:
            raise ConfigError(f"pruning.from_run={ref_dir} was trained on dataset "
                              f"{ref_cfg.dataset.name}: set dataset={ref_cfg.dataset.name}")
    else:
        ref = reference_config(cfg)
        ref_dir = run_dir.parent / f"reference-{config_digest(ref)}"
        ref_dir.mkdir(parents=True, exist_ok=True)
        # Parallel jobs of one training config wait for the one that trains the reference.
        with RunLock(ref_dir, wait_s=REFERENCE_WAIT_S) if not dist.enabled else nullcontext():
            if dist.is_main:
                record_reference(ref, ref_dir)
            log.info("reference: %s", ref_dir)
            run(ref, ref_dir)
        barrier(dist)  # rank 0 writes the reference's summary after the others return
    status = read_json(ref_dir / SUMMARY).get("status") if (ref_dir / SUMMARY).exists() else None
    if status != "completed":
        raise ConfigError(f"the reference in {ref_dir} is {status or 'unfinished'}: train it to "
                          f"completion (or fix its settings) before pruning it")
    early = rewind_path(ref_dir, cfg.pruning.rewind_epoch)
    if MODES[cfg.pruning.mode].rewind and not early.is_file():
        raise ConfigError(f"mode=cascade_rewind needs {early}: retrain the reference with "
                          f"trainer.keep_epochs=[{cfg.pruning.rewind_epoch}] or pick another "
                          f"pruning.rewind_epoch")
    return ref_dir


def restart_schedule(scheduler: LambdaLR, step: int) -> None:
    """Move a freshly built schedule to optimizer step `step` (learning-rate rewinding)."""
    lrs = [base * fn(step) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas,
                                               strict=True)]
    scheduler.last_epoch = step
    for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = lrs


def barrier(dist: distributed.Dist) -> None:
    if dist.enabled:
        torch_dist.barrier()


def broadcast_masks(masks: Masks, dist: distributed.Dist) -> None:
    """Rank 0's masks on every rank (DDP itself broadcasts only parameters and buffers)."""
    if dist.enabled:
        for m in masks.masks:
            torch_dist.broadcast(m, src=0)


class PruningExperiment:
    """One method on one reference network: every (repetition, keep ratio) cell this job owns."""

    def __init__(self, cfg: DictConfig, run_dir: Path, record: JobRecord | None = None) -> None:
        self.cfg, self.p, self.record = cfg, cfg.pruning, record
        self.mode, self.ratios = check_pruning(cfg)
        self.dist, self.device = distributed.init(distributed.resolve_device(cfg.device))
        self.workers = self.dist.world if self.dist.enabled else cfg.workers
        self.run_dir = Path(run_dir)
        self.cells_dir = self.run_dir / CELLS
        self.ref_dir = ensure_reference(cfg, self.run_dir, self.dist)
        self.ref = load_checkpoint(self.ref_dir / CHECKPOINT)
        self.ref_digest = self.ref["config_digest"]
        torch.manual_seed(cfg.seed)
        self.data = build_data(cfg.dataset, cfg.batch_size * self.workers,
                               cfg.trainer.eval_batch_size, self.device)
        self.method = build(self.p.method)
        self.structured = getattr(self.method, "structured", False)
        self.structural = getattr(self.method, "structural", False)
        if self.structural and self.mode.chain:
            raise ConfigError(f"pruning={self.p.name} changes the architecture, which a "
                              f"cascade cannot prune again: use pruning.mode=retrain")
        for key, low in (("batch", 1), ("pairs", 1)):
            value = self.p.speed[key]
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"pruning.speed.{key}={value} is out of range: use an "
                                  f"integer >= {low}")
        dense_model = self.new_model()[0]  # the reference's prunable weights and FLOPs
        dense = Masks(dense_model)
        self.dense = {"params": dense.total, "flops": count_flops(
            dense_model, self.data.input_shape, dense)["flops"]}
        unsplit = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        for key in SPLIT_KEYS:
            unsplit.pruning[key] = None
        self.digest = config_digest(unsplit)

    def new_model(self) -> tuple[torch.nn.Module, FastPath]:
        model = build(self.cfg.model, input_shape=self.data.input_shape,
                      num_classes=self.data.num_classes).to(self.device)
        fast = FastPath.from_config(self.cfg.trainer, self.device, model, compressed=False)
        return fast.prepare(model), fast

    def evaluate(self, model: torch.nn.Module, masks: Masks, fast: FastPath) -> dict[str, Any]:
        """Test metrics, and the weights and FLOPs kept as fractions of the dense reference's
        (a factorised network has other layers than the reference)."""
        kept = masks.kept()
        flops = count_flops(model, self.data.input_shape, masks)
        return {**{f"test_{k}": v for k, v in topk_metrics(model, self.data.test, fast).items()},
                "params_kept": kept, "params_prunable": self.dense["params"],
                "keep": kept / self.dense["params"], "params_total": parameters(model),
                "flops": self.dense["flops"], "flops_kept": flops["flops_kept"],
                "flops_kept_fraction": flops["flops_kept"] / self.dense["flops"]}

    def reference_model(self) -> tuple[torch.nn.Module, FastPath]:
        model, fast = self.new_model()
        load_state(model, {k: v.to(self.device) for k, v in self.ref["model"].items()})
        return model, fast

    def reference_record(self) -> dict[str, Any]:
        model, fast = self.reference_model()
        return {"reference": str(self.ref_dir), "reference_digest": self.ref_digest,
                **self.evaluate(model, Masks(model), fast)}

    def speed(self, model: torch.nn.Module, masks: Masks) -> dict[str, Any]:
        """Structured methods: the exported dense network's size, its largest output difference
        from the masked network on a test batch, and its measured speed-up over the unpruned
        reference (rank 0 measures; null for methods whose zeros dense kernels cannot skip)."""
        if not self.structured or not self.dist.is_main:
            return {"export_params": None, "export_max_abs_diff": None, "speedup": None}
        was_training = model.training
        small = export(model, masks)
        x = next(iter(self.data.test.batches(None)))[0]
        with torch.no_grad():
            diff = float((small(x) - model.eval()(x)).abs().max())
        model.train(was_training)
        return {"export_params": parameters(small), "export_max_abs_diff": diff,
                **compare_speed(self.reference_model()[0], small, self.data.input_shape,
                                self.device, self.p.speed.batch, self.p.speed.pairs)}

    def cell_digest(self, rep: int, index: int) -> str:
        key = json.dumps([self.digest, self.ref_digest, rep, index, self.ratios[index]])
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def starting_point(self, rep: int, index: int, previous: dict | None) -> dict:
        """Weights and masks a cell prunes from: the reference, or in a cascade the previous
        ratio's retrained cell (from memory, or from its checkpoint if that cell ran earlier)."""
        if not self.mode.chain or index == 0:
            return {"model": self.ref["model"], "masks": None}
        if previous is not None:
            return previous
        prev = self.cells_dir / cell_name(rep, index - 1) / CHECKPOINT
        ckpt = load_checkpoint(prev, self.cell_digest(rep, index - 1))
        return {"model": ckpt["model"], "masks": ckpt["masks"]}

    def run_cell(self, rep: int, index: int, previous: dict | None) -> dict | None:
        """Prune, retrain and test one cell; returns its final weights and masks (for a
        cascade), or None if the cell had finished in an earlier start."""
        name, keep = cell_name(rep, index), self.ratios[index]
        cell_dir = self.cells_dir / name
        logger = logger_for(self.cfg, cell_dir, self.record.hydra_cfg if self.record else None,
                            name=f"{self.run_dir.name}/{name}",
                            more={"cell": name, "repetition": rep, "keep_ratio": keep})
        life = Lifecycle(cell_dir, self.cell_digest(rep, index), None,
                         result=self.cells_dir / f"{name}.json", logger=logger,
                         write=self.dist.is_main)
        cells: list[Cell] = []

        def build_cell(ckpt: dict | None) -> Cell:
            cells.append(Cell(self, rep, index, None if ckpt is not None else
                              self.starting_point(rep, index, previous), ckpt))
            return cells[0]

        result = life.execute(build_cell)
        if result.reused:
            log.info("cell %s (keep %.4f) already finished: skipped", name, keep)
            return None
        record = result.summary
        log.info("cell %s: keep %.4f (target %.4f), FLOPs kept %.4f, top-1 error %.4f%s", name,
                 record["keep"], keep, record["flops_kept_fraction"], record["test_top1_err"],
                 "" if record["speedup"] is None else
                 f", exported {record['export_params']:,} parameters, measured speed-up "
                 f"{record['speedup']:.2f}x")
        cell = cells[0]
        return {"model": copy.deepcopy(cell.parts.model.state_dict()),
                "masks": cell.masks.state_dict()}

    def cells(self) -> list[tuple[int, int]]:
        reps = range(self.p.repetitions) if self.p.repetition is None else [self.p.repetition]
        indices = (range(len(self.ratios)) if self.p.ratio_index is None
                   else [self.p.ratio_index])
        return [(r, i) for r in reps for i in indices]

    def run(self) -> float:
        t0 = time.perf_counter()
        if self.dist.is_main and self.record is not None:
            self.record.start()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        reference = self.reference_record()
        chance = 1.0 - 1.0 / self.data.num_classes
        if reference["test_top1_err"] >= chance:
            log.warning("the reference network is no better than chance: test top-1 error "
                        "%.1f%% against %.1f%% for a guess; its prune potential says nothing "
                        "(train it longer, or check its settings, in %s)",
                        100 * reference["test_top1_err"], 100 * chance, self.ref_dir)
        if self.dist.is_main:
            write_json_atomic(self.run_dir / REFERENCE, reference)
        summary: dict[str, Any] = {"kind": "pruning", "config_digest": self.digest,
                                   "method": self.p.name, "mode": self.p.mode,
                                   "reference": str(self.ref_dir), "processes": self.dist.world,
                                   "versions": versions()}
        previous: dict | None = None
        try:
            cells = self.cells()
            for k, (rep, index) in enumerate(cells):
                log.info("cell %d of %d: %s", k + 1, len(cells), cell_name(rep, index))
                previous = self.run_cell(rep, index, previous if index > 0 else None)
        except BaseException as e:  # record why the run stopped, then let it propagate
            summary.update(status="interrupted" if isinstance(e, KeyboardInterrupt) else "failed",
                           error=one_line(e), objective=None, metrics={})
            if self.dist.is_main:
                write_json_atomic(self.run_dir / SUMMARY, summary)
            raise
        barrier(self.dist)  # every cell's record is written
        records = [read_json(p) for p in sorted(self.cells_dir.glob("*.json"))]
        potential = prune_potential(reference, records, delta=0.5)
        summary.update(status="completed", cells=len(records), objective=potential,
                       objective_name="prune_potential@0.5",
                       metrics={"prune_potential@0.5": potential,
                                **{f"reference/{k}": v for k, v in reference.items()
                                   if k.startswith("test_")}},
                       total_s=time.perf_counter() - t0)
        if self.dist.is_main:
            write_json_atomic(self.run_dir / SUMMARY, summary)
        log.info("pruning %s: %d cells, prune potential at +0.5%% error: %.4f", self.p.name,
                 len(records), potential)
        log.info("run directory: %s", self.run_dir)
        return potential


def run_pruning(cfg: DictConfig, run_dir: Path, record: JobRecord | None = None) -> float:
    """Run the experiment of `cfg.pruning` in `run_dir`; returns the prune potential (fraction of
    prunable weights removed) at +0.5% top-1 error, for sweepers. record: Hydra's record of the
    job, written once the experiment starts writing."""
    check_config(cfg)  # before the reference's folder is made
    return PruningExperiment(cfg, run_dir, record).run()


class Cell:
    """One (repetition, keep ratio) cell: pruned from `start` (or rebuilt from its checkpoint
    `ckpt`, which the lifecycle then loads) and retrained (the lifecycle's Task)."""

    def __init__(self, exp: PruningExperiment, rep: int, index: int, start: dict | None,
                 ckpt: dict | None) -> None:
        self.exp, self.rep, self.index = exp, rep, index
        self.name, self.keep = cell_name(rep, index), exp.ratios[index]
        self.seed = epoch_seed(exp.cfg.seed, 1 + rep, index)
        model, fast = exp.new_model()
        masks = Masks(model)
        self.plan = None
        if start is not None:
            load_state(model, {k: v.to(exp.device) for k, v in start["model"].items()})
            if start["masks"] is not None:
                masks.load_state_dict(start["masks"])
            torch.manual_seed(self.seed)
            try:
                self.plan = exp.method(model, masks, self.keep, exp.data)
            except ValueError as e:
                raise ConfigError(str(e)) from None
            if self.plan is not None:  # a factorised network: new layers, new (all-ones) masks
                model, masks = fast.prepare(model), Masks(model)
            broadcast_masks(masks, exp.dist)
            if exp.mode.rewind:
                early = load_checkpoint(rewind_path(exp.ref_dir, exp.p.rewind_epoch))
                load_state(model, {k: v.to(exp.device) for k, v in early["model"].items()})
            masks.apply()
        elif ckpt is not None and ckpt.get("plan") is not None:  # the factorised layers it trained
            self.plan = ckpt["plan"]
            apply_plan(model, self.plan)
            model, masks = fast.prepare(model), Masks(model)
        self.masks = masks
        optimizer = build(exp.cfg.optimizer)(model.parameters())
        steps = len(exp.data.train)
        scheduler = build(exp.cfg.scheduler)(optimizer, steps_per_epoch=steps,
                                             epochs=exp.cfg.epochs)
        restart_schedule(scheduler, exp.p.lr_restart_epoch * steps)
        self.parts = Parts(model, optimizer, scheduler,
                           distributed.wrap(model, exp.dist, exp.device), fast)
        self.state = TrainState()

    def facts(self) -> dict[str, Any]:
        p = self.exp.p
        return {"method": p.name, "mode": p.mode, "repetition": self.rep,
                "ratio_index": self.index, "keep_target": self.keep,
                "reference_digest": self.exp.ref_digest, "retrain_epochs": p.retrain_epochs,
                "lr_restart_epoch": p.lr_restart_epoch}

    def progress(self) -> dict[str, Any]:
        return {"retrain_wall_s": self.state.wall_s}

    def state_dict(self) -> dict[str, Any]:
        p = self.parts
        return {**self.state.state_dict(), "model": p.model.state_dict(),
                "masks": self.masks.state_dict(), "plan": self.plan,
                "optimizer": p.optimizer.state_dict(), "scheduler": p.scheduler.state_dict()}

    def load_state_dict(self, ckpt: dict[str, Any]) -> int:
        p = self.parts
        p.model.load_state_dict(ckpt["model"])
        self.masks.load_state_dict(ckpt["masks"])
        p.optimizer.load_state_dict(ckpt["optimizer"])
        p.scheduler.load_state_dict(ckpt["scheduler"])
        self.state.load_state_dict(ckpt, self.exp.device)
        return self.state.step

    def train(self, run_log: RunLog, save: Callable[..., None]) -> Outcome:
        exp = self.exp
        epochs = exp.p.retrain_epochs

        def on_epoch_end(s: TrainState) -> None:
            if s.epoch % exp.cfg.trainer.checkpoint_every == 0 or s.epoch == epochs:
                save()

        settings = TrainerSettings.from_config(exp.cfg.trainer, epochs=epochs,
                                               batch_size=exp.cfg.batch_size, seed=self.seed,
                                               workers=exp.workers)
        trainer = Trainer(self.parts, exp.data, settings, run_log, on_epoch_end,
                          [MaskedWeights(self.masks)], exp.dist)
        log.info("cell %s: keep %.4f of %s prunable weights, retraining %d epochs", self.name,
                 self.keep, f"{exp.dense['params']:,}", epochs)
        status = "completed"
        try:
            trainer.fit(self.state)
        except Diverged as e:
            log.warning("cell %s diverged: %s", self.name, e)
            status = "diverged"
        model = self.parts.model
        return Outcome(status, {**exp.evaluate(model, self.masks, self.parts.fast),
                                **exp.speed(model, self.masks), "plan": self.plan})
