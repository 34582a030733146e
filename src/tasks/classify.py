"""The classify task: a model trained on a classification dataset with its optimizer, schedule,
EMA averages and (simulated or torchrun) workers with gradient compression; final and best
states evaluated on every split. The life of the run is src/lifecycle/run.py's."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig

from src.averaging.ema import EMA, ema_name
from src.compression.exchange import build_exchange, ddp_hook
from src.core.build import build, check_settings
from src.core.errors import ConfigError
from src.core.files import kept_checkpoint
from src.core.keys import RAW, SPLITS, metric_prefix, split_metrics
from src.data.bundle import DataBundle, build_data, check_present
from src.engine import distributed
from src.engine.evaluation import final_and_best
from src.engine.fast_path import FastPath
from src.engine.features import Averages, ExchangeStats, Feature, SampleTracking, StepSizes
from src.engine.trainer import Parts, Trainer, TrainerSettings, TrainState
from src.engine.trainer import history_keys as trainer_history_keys
from src.lifecycle.identity import config_digest
from src.lifecycle.record import JobRecord, RunLog, logger_for
from src.lifecycle.run import Lifecycle, Outcome

log = logging.getLogger(__name__)


def model_names(cfg: DictConfig) -> list[str]:
    """The raw model and every averaged one of this config."""
    return [RAW] + [ema_name(d) for d in cfg.averaging.decays]


def metric_names(cfg: DictConfig) -> list[str]:
    """Every key that summary.json's metrics will hold for this config."""
    return split_metrics(model_names(cfg))


def history_keys(cfg: DictConfig) -> set[str]:
    """The per-epoch scalars every record of this config's history.jsonl holds."""
    return trainer_history_keys(model_names(cfg), feature_types(cfg), cfg.trainer.full_train_eval)


def feature_types(cfg: DictConfig) -> list[type[Feature]]:
    """The kinds of feature a run of this config trains with, in the order they act after a
    step: Classify.features builds these, and history_keys reads their keys."""
    kinds: list[type[Feature]] = []
    if cfg.averaging.decays:
        kinds.append(Averages)
    if cfg.compression.get("compressor") is not None:
        kinds.append(ExchangeStats)
    if getattr(get_class(cfg.optimizer._target_), "needs_loss", False):  # Momo, ProxSPS
        kinds.append(StepSizes)
    if cfg.trainer.track_samples:
        kinds.append(SampleTracking)
    return kinds


def check_config(cfg: DictConfig) -> None:
    """One-line ConfigError for values the run cannot use, and the data it cannot find."""
    # their code imports, and a factory's own checks (src/core/build.py)
    for node in (cfg.model, cfg.dataset.source, cfg.optimizer):
        check_settings(node)
    for key, low, high in (("num_bits", 1, 32), ("workers", 1, None), ("epochs", 1, None),
                           ("batch_size", 1, None)):
        value = cfg[key]
        if not isinstance(value, int) or value < low or (high is not None and value > high):
            span = f"{low}..{high}" if high is not None else f">= {low}"
            raise ConfigError(f"{key}={value} is out of range: use an integer {span}")
    if "ptr" in cfg.dataset:
        raise ConfigError(f"dataset={cfg.dataset.name} is a binary dataset of the regimes study: "
                          f"add task=regimes, or choose a classification dataset")
    init_seed = cfg.get("init_seed")
    if init_seed is not None and (not isinstance(init_seed, int) or init_seed < 0):
        raise ConfigError(f"init_seed={init_seed} is not a seed: use an integer >= 0, or null to "
                          f"initialise from seed")
    if cfg.trainer.track_samples:
        bad = [s for s in cfg.trainer.track_splits if s not in SPLITS]
        if bad or not cfg.trainer.track_splits:
            raise ConfigError(f"trainer.track_splits={list(cfg.trainer.track_splits)}: use one "
                              f"or more of {', '.join(SPLITS)}")
    epoch_keys = history_keys(cfg)
    for name, key in cfg.trainer.history_names.items():
        if key not in epoch_keys:
            raise ConfigError(f"trainer.history_names.{name}={key} is not a history key of this "
                              f"run: use one of {', '.join(sorted(epoch_keys))}")
    names = metric_names(cfg)
    if cfg.objective not in names:
        raise ConfigError(f"objective={cfg.objective} is not a metric of this run: use one of "
                          f"{', '.join(n for n in names if n.endswith('val_acc'))} (or another "
                          f"<model/>[best/]<train|val|test>_<loss|acc>)")
    check_present(cfg.dataset)




class Classify:
    """One classify run's parts, built from its config (the lifecycle's Task)."""

    def __init__(self, cfg: DictConfig, run_dir: Path, dist: distributed.Dist,
                 device: torch.device, data: DataBundle | None = None) -> None:
        """data: the dataset's views, when runs of one dataset share them (stacked runs)."""
        self.cfg, self.run_dir, self.dist, self.device = cfg, run_dir, dist, device
        # init_seed fixes the initial weights across seeds (the optimizer records); data order,
        # augmentation and dropout follow `seed` (the trainer's epoch_seed).
        init_seed = cfg.get("init_seed")
        torch.manual_seed(cfg.seed if init_seed is None else init_seed)
        # workers > 1 without compression: averaging W per-worker gradients of B samples is one
        # step on W*B samples.
        if data is None:
            data = build_data(cfg.dataset, cfg.batch_size * cfg.workers,
                              cfg.trainer.eval_batch_size, device, cfg.get("augment"))
        self.data = data
        model = build(cfg.model, input_shape=data.input_shape,
                      num_classes=data.num_classes).to(device)
        exchange = build_exchange(cfg.compression)
        fast = FastPath.from_config(cfg.trainer, device, model, exchange is not None)
        model = fast.prepare(model)  # before the EMA copies the weights and the optimizer sees them
        optimizer = build(cfg.optimizer)(model.parameters())
        scheduler = build(cfg.scheduler)(optimizer, steps_per_epoch=len(data.train),
                                         epochs=cfg.epochs)
        try:
            self.ema = (EMA(model, cfg.averaging.decays, cfg.averaging.warmup)
                        if cfg.averaging.decays else None)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if exchange is not None:
            local = [dist.rank] if dist.enabled else list(range(cfg.workers))
            try:
                exchange.setup(list(model.parameters()), cfg.workers, local,
                               simulated=not dist.enabled, steps=len(data.train) * cfg.epochs)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        forward = distributed.wrap(model, dist, device, exchange, ddp_hook)
        self.parts = Parts(model, optimizer, scheduler, fast.compiled(forward), fast, exchange)
        self.state = TrainState()

    def features(self, steps: int) -> list[Feature]:
        """Those of feature_types(cfg), built on this run's parts."""
        parts, cfg = self.parts, self.cfg
        make: dict[type[Feature], Callable[[], Feature]] = {
            Averages: lambda: Averages(self.ema),
            ExchangeStats: lambda: ExchangeStats(parts.exchange, cfg.workers),
            StepSizes: lambda: StepSizes(parts.optimizer, steps, self.device),
            SampleTracking: lambda: SampleTracking(self.run_dir, cfg.trainer.track_splits,
                                                   write=self.dist.is_main),
        }
        return [make[kind]() for kind in feature_types(cfg)]

    def facts(self) -> dict[str, Any]:
        cfg, ex = self.cfg, self.parts.exchange
        num_params = sum(p.numel() for p in self.parts.model.parameters())
        log.info("%s: %s parameters on %s, %d steps/epoch, %d worker(s)", cfg.model._target_,
                 f"{num_params:,}", self.device, len(self.data.train), cfg.workers)
        facts: dict[str, Any] = {"num_params": num_params, "device": str(self.device),
                                 "workers": cfg.workers, "processes": self.dist.world}
        if self.data.fingerprint is not None:
            facts.update(data_fingerprint=self.data.fingerprint, data_streamed=self.data.streamed)
        if ex is not None:
            if not self.dist.enabled:
                log.info("gradient exchange: the %s step (compression.fused=%s)",
                         "fused, compiled" if ex.fused else "eager", ex.fused_setting)
            facts["compression"] = self.compression = {
                "bits_per_element": ex.bits, "levels": [ex.low, ex.high],
                "payload_bytes_per_worker_step": ex.payload_bytes,
                "fp32_bytes_per_worker_step": ex.fp32_bytes,
                "compression_ratio": ex.fp32_bytes / ex.payload_bytes,
                "fused_step": ex.fused is not None}
        return facts

    def progress(self) -> dict[str, Any]:
        return {"epochs_completed": self.state.epoch, "step": self.state.step,
                "train_wall_s": self.state.wall_s}

    def state_dict(self) -> dict[str, Any]:
        p = self.parts
        return {**self.state.state_dict(), "model": p.model.state_dict(),
                "optimizer": p.optimizer.state_dict(), "scheduler": p.scheduler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "exchange": p.exchange.state_dict() if p.exchange is not None else None,
                "data_fingerprint": self.data.fingerprint}

    def load_state_dict(self, ckpt: dict[str, Any]) -> int:
        p = self.parts
        was = ckpt.get("data_fingerprint")
        if was != self.data.fingerprint:
            raise ConfigError(f"dataset.root={self.cfg.dataset.get('root')} changed since this "
                              f"run started (files added, removed or resized; digest {was} is "
                              f"now {self.data.fingerprint}): restore the folder, or train on "
                              f"it afresh in another hydra.run.dir")
        p.model.load_state_dict(ckpt["model"])
        p.optimizer.load_state_dict(ckpt["optimizer"])
        p.scheduler.load_state_dict(ckpt["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"])
        if p.exchange is not None:
            p.exchange.load_state_dict(ckpt["exchange"])
        self.state.load_state_dict(ckpt, self.device)
        return self.state.step

    def trainer(self, run_log: RunLog, save: Callable[..., None]) -> Trainer:
        """The run's trainer: its records go to `run_log`; `save` checkpoints at epoch ends."""
        cfg = self.cfg
        keep_epochs = cfg.trainer.get("keep_epochs", ())  # e.g. pruning's rewind point

        def on_epoch_end(s: TrainState) -> None:
            keep = s.epoch in keep_epochs
            if s.epoch % cfg.trainer.checkpoint_every == 0 or s.epoch == cfg.epochs or keep:
                save(*([self.run_dir / kept_checkpoint(s.epoch)] if keep else []))

        settings = TrainerSettings.from_config(cfg.trainer, epochs=cfg.epochs,
                                               batch_size=cfg.batch_size, seed=cfg.seed,
                                               workers=cfg.workers)
        return Trainer(self.parts, self.data, settings, run_log, on_epoch_end,
                       self.features(len(self.data.train)), self.dist)

    def train(self, run_log: RunLog, save: Callable[..., None]) -> Outcome:
        trainer = self.trainer(run_log, save)
        trainer.fit(self.state)
        return self.conclude(trainer)

    def conclude(self, trainer: Trainer) -> Outcome:
        """After the last epoch: every model's final and best states on every split."""
        ex = self.parts.exchange
        fields: dict[str, Any] = {}
        if ex is not None and self.dist.enabled:
            fields["compression"] = {**self.compression, "bytes_sent_by_rank0": ex.bytes_sent}
        names, t_eval = trainer.model_names(), time.perf_counter()
        log.info("final evaluation: %d model(s) (%s), final and best states (each distinct "
                 "state once, all in one pass per batch), on train, val and test", len(names),
                 ", ".join(names))
        metrics = final_and_best(self.parts.model, {
            name: (trainer.state_of(name), self.state.best[name]["state"]) for name in names},
            self.data, SPLITS, self.parts.fast)
        for name in names:
            metrics[f"{metric_prefix(name)}best/epoch"] = self.state.best[name]["epoch"]
        fields["final_eval_s"] = time.perf_counter() - t_eval
        return Outcome("completed", metrics, fields)


def lifecycle(cfg: DictConfig, run_dir: Path, record: JobRecord | None,
              write: bool = True) -> Lifecycle:
    """The lifecycle of the classify run `cfg` in `run_dir`."""
    return Lifecycle(Path(run_dir), config_digest(cfg), cfg.objective, record=record,
                     logger=logger_for(cfg, run_dir, record.hydra_cfg if record else None),
                     write=write)


def run(cfg: DictConfig, run_dir: Path, record: JobRecord | None = None) -> float:
    """Train the run described by `cfg` in `run_dir` and return its objective.

    A run directory with a finished summary of the same config returns that summary's objective;
    one with a checkpoint resumes from it and ends exactly where an uninterrupted run would.
    record: Hydra's record of the job, written once the run starts writing.
    """
    check_config(cfg)
    dist, device = distributed.init(distributed.resolve_device(cfg.device))
    if dist.enabled and cfg.workers != dist.world:
        log.info("torchrun: %d processes are the workers (workers=%d ignored)", dist.world,
                 cfg.workers)
        cfg.workers = dist.world
    run_dir = Path(run_dir)
    life = lifecycle(cfg, run_dir, record, write=dist.is_main)
    result = life.execute(lambda ckpt: Classify(cfg, run_dir, dist, device))
    metrics = result.summary.get("metrics") or {}
    if metrics and not result.reused:
        log.info("test accuracy: %s", " | ".join(
            f"{name} {100 * metrics[f'{metric_prefix(name)}test_acc']:.2f}%"
            for name in model_names(cfg)))
    log.info("run directory: %s", run_dir)
    return result.objective
