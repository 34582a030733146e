"""Builds a run from its composed config, trains it (resuming if it can) and writes its summary."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import platform
import re
import socket
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from src import distributed
from src.averaging.ema import EMA, ema_name
from src.checkpoint import FORMAT, load_checkpoint, save_atomic
from src.compression.exchange import GradientExchange, ddp_hook
from src.data.bundle import DataBundle, build_data
from src.errors import CheckpointError, ConfigError, UserError, one_line
from src.evaluation.metrics import evaluate_states
from src.fast_path import FastPath
from src.run_log import (
    SUMMARY,
    RunLog,
    neutral,
    read_json,
    start_job_record,
    write_json_atomic,
)
from src.trainer import RAW, Diverged, Trainer, TrainState, metric_prefix

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
FINISHED = ("completed", "diverged")
SPLITS = ("train", "val", "test")


def build(node: DictConfig, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, with a component's own ValueError reported as one line; a
    partial (optimizers, schedulers) reports the ValueError of its later call the same way."""
    try:
        built = instantiate(node, **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, UserError):
            raise e.__cause__ from None
        if isinstance(e.__cause__, ValueError):
            raise ConfigError(rejected(node, e.__cause__)) from None
        raise
    if not isinstance(built, functools.partial):
        return built

    @functools.wraps(built)
    def checked(*args: Any, **more: Any) -> Any:
        try:
            return built(*args, **more)
        except ValueError as e:
            raise ConfigError(rejected(node, e)) from None

    return checked


def rejected(node: DictConfig, e: ValueError) -> str:
    key = node._key() if hasattr(node, "_key") else None  # the config group, e.g. optimizer
    where = f"{key} ({node.get('_target_')})" if key else str(node.get("_target_"))
    return (f"{where} rejects its settings: {str(e).splitlines()[0]}: change that value "
            f"(python train.py --cfg job prints every setting)")


def build_exchange(cfg: DictConfig) -> GradientExchange | None:
    """The compression group's pieces, or None for `compression=none`."""
    if cfg.get("compressor") is None:
        return None
    try:
        return GradientExchange(build(cfg.compressor), aggregate=cfg.aggregate, tie=cfg.tie,
                                worker_momentum=cfg.worker_momentum,
                                error_feedback=cfg.error_feedback,
                                count_levels=cfg.count_levels,
                                fused=cfg.get("fused", "auto"))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def resolve_device(spec: str) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cpu', 'cuda', 'cuda:N' are checked."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", str(spec))
    if m is None:
        raise ConfigError(f"device={spec} is not a device: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ConfigError(f"device={spec} but no CUDA GPU is visible: use device=cpu or auto")
    index = int(m.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device={spec} but only {torch.cuda.device_count()} GPU(s) are "
                          f"visible: use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return torch.device(spec)


def metric_names(cfg: DictConfig) -> list[str]:
    """Every key that summary.json's metrics will hold for this config."""
    names = [RAW] + [ema_name(d) for d in cfg.averaging.decays]
    return [f"{metric_prefix(n)}{best}{split}_{m}" for n in names for best in ("", "best/")
            for split in SPLITS for m in ("loss", "acc")]


def history_keys(cfg: DictConfig) -> set[str]:
    """The per-epoch scalars every record of this config's history.jsonl holds."""
    keys = {"epoch", "step", "lr", "train_loss", "train_acc", "samples_per_s", "epoch_s",
            "wall_s", "model_norm", "grad_norm"}
    keys |= {f"{metric_prefix(n)}val_{m}" for n in [RAW, *map(ema_name, cfg.averaging.decays)]
             for m in ("loss", "acc")}
    if cfg.trainer.full_train_eval:
        keys |= {"full_train_loss", "full_train_acc", "full_train_eval_s"}
    if cfg.trainer.track_samples:
        keys.add("track_samples_s")
    return keys


def check_config(cfg: DictConfig) -> None:
    """One-line ConfigError for values the run cannot use."""
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


# Settings added after runs were made, with the value that reproduces those runs: at that value
# they leave the digest as it was, so older run directories still resume and are still found.
ADDED_LATER = {"task.dynamics": "sgd"}


def config_digest(cfg: DictConfig) -> str:
    """Fingerprint of everything that determines a run's results."""
    flat = flatten(OmegaConf.to_container(cfg, resolve=True))
    kept = {k: v for k, v in flat.items()
            if not neutral(k) and not (k in ADDED_LATER and ADDED_LATER[k] == v)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}{k}." if isinstance(v, dict) else f"{prefix}{k}"))
    return out


def worst_objective(name: str) -> float:
    """What a sweep records for a diverged run: 0 for accuracies, +inf for losses."""
    return 0.0 if name.endswith("acc") else math.inf


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda or "none"}
    for pkg in ("torchvision", "hydra-core", "omegaconf", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def final_metrics(trainer: Trainer, state: TrainState, data: DataBundle) -> dict[str, float]:
    """Final and best (lowest val loss) state of the raw and every averaged model on each split.

    Every distinct state is evaluated once (a best state that equals the final one, as when the
    last epoch was the best, is not evaluated again), all of them together in one pass over each
    batch of a split (src/evaluation/metrics.py: evaluate_states).
    """
    keys, states = [], []
    for name in trainer.model_names():
        for tag, weights in (("", trainer.state_of(name)), ("best/", state.best[name]["state"])):
            keys.append(f"{metric_prefix(name)}{tag}")
            states.append(weights)
    metrics: dict[str, float] = {}
    for split in SPLITS:
        split_data = getattr(data, "train_eval" if split == "train" else split)
        for key, m in zip(keys, evaluate_states(trainer.model, states, split_data, trainer.fast),
                          strict=True):
            metrics[f"{key}{split}_loss"], metrics[f"{key}{split}_acc"] = m["loss"], m["acc"]
    for name in trainer.model_names():
        metrics[f"{metric_prefix(name)}best/epoch"] = state.best[name]["epoch"]
    return metrics


def finished_objective(run_dir: Path, digest: str, objective_name: str) -> float | None:
    """The objective of a run that already finished in `run_dir` with this config, else None.

    A run directory whose run finished with another config is refused, never overwritten.
    """
    path = Path(run_dir) / SUMMARY
    if not path.exists():
        return None
    done = read_json(path)
    if done.get("status") not in FINISHED:
        return None
    if done.get("config_digest") != digest:
        raise ConfigError(f"{run_dir} holds a run that {done['status']} with another config "
                          f"(the defaults in conf/ changed, or hydra.run.dir points at another "
                          f"run): use another hydra.run.dir, or delete {run_dir} to retrain")
    log.info("run in %s already %s; objective %s", run_dir, done["status"], done["objective"])
    objective = done["objective"]
    return worst_objective(objective_name) if objective is None else objective


def run(cfg: DictConfig, run_dir: Path) -> float:
    """Train the run described by `cfg` in `run_dir` and return its objective.

    A run directory with a finished summary of the same config returns that summary's objective;
    one with a checkpoint resumes from it and ends exactly where an uninterrupted run would.
    """
    t_start, started_at = time.perf_counter(), time.time()
    check_config(cfg)
    dist_info, device = distributed.init(resolve_device(cfg.device))
    if dist_info.enabled and cfg.workers != dist_info.world:
        log.info("torchrun: %d processes are the workers (workers=%d ignored)", dist_info.world,
                 cfg.workers)
        cfg.workers = dist_info.world
    run_dir = Path(run_dir)
    digest = config_digest(cfg)
    summary_path, ckpt_path = run_dir / SUMMARY, run_dir / CHECKPOINT
    done = finished_objective(run_dir, digest, cfg.objective)
    if done is not None:
        return done
    ckpt = load_checkpoint(ckpt_path, digest) if ckpt_path.exists() else None

    # init_seed fixes the initial weights across seeds (the optimizer records); data order,
    # augmentation and dropout follow `seed` (Trainer's epoch_seed).
    init_seed = cfg.get("init_seed")
    torch.manual_seed(cfg.seed if init_seed is None else init_seed)
    # workers > 1 without compression: averaging W per-worker gradients of B samples is one step
    # on W*B samples.
    data = build_data(cfg.dataset, cfg.batch_size * cfg.workers, cfg.trainer.eval_batch_size,
                      device)
    model = build(cfg.model, input_shape=data.input_shape,
                  num_classes=data.num_classes).to(device)
    compressed = cfg.compression.get("compressor") is not None
    fast = FastPath.from_config(cfg.trainer, device, model, compressed)
    model = fast.prepare(model)  # before the EMA copies the weights and the optimizer sees them
    optimizer = build(cfg.optimizer)(model.parameters())
    scheduler = build(cfg.scheduler)(optimizer, steps_per_epoch=len(data.train),
                                     epochs=cfg.epochs)
    try:
        ema = (EMA(model, cfg.averaging.decays, cfg.averaging.warmup) if cfg.averaging.decays
               else None)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    local_workers = [dist_info.rank] if dist_info.enabled else list(range(cfg.workers))
    exchange = build_exchange(cfg.compression)
    if exchange is not None:
        try:
            exchange.setup(list(model.parameters()), cfg.workers, local_workers,
                           simulated=not dist_info.enabled, steps=len(data.train) * cfg.epochs)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    forward_model = model
    if dist_info.enabled:
        forward_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
        if exchange is not None:
            forward_model.register_comm_hook(exchange, ddp_hook)
    forward_model = fast.compiled(forward_model)
    state = TrainState()
    history: list[dict] = []
    if ckpt is not None:
        history = restore(ckpt, model, optimizer, scheduler, ema, exchange, state, device,
                          ckpt_path)
        log.info("resuming %s from epoch %d (step %d)", run_dir, state.epoch, state.step)
    if dist_info.is_main:
        start_job_record(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_log = RunLog(run_dir, cfg.trainer.tensorboard, history, state.step,
                     write=dist_info.is_main)

    def save(s: TrainState) -> None:
        keep = s.epoch in cfg.trainer.get("keep_epochs", ())  # e.g. pruning's rewind point
        if s.epoch % cfg.trainer.checkpoint_every == 0 or s.epoch == cfg.epochs or keep:
            exchange_state = exchange.state_dict() if exchange is not None else None  # all ranks
            if dist_info.is_main:
                payload = {"format": FORMAT, "config_digest": digest, "epoch": s.epoch,
                           "step": s.step, "wall_s": s.wall_s, "best": s.best,
                           "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                           "scheduler": scheduler.state_dict(),
                           "ema": ema.state_dict() if ema is not None else None,
                           "exchange": exchange_state, "history": run_log.history}
                save_atomic(payload, ckpt_path)
                if keep:
                    save_atomic(payload, run_dir / f"checkpoint_epoch{s.epoch}.pt")

    trainer = Trainer(model, optimizer, scheduler, data, ema, run_log, cfg.seed, cfg.epochs,
                      cfg.trainer, save, batch_size=cfg.batch_size, workers=cfg.workers,
                      exchange=exchange, dist=dist_info, forward_model=forward_model,
                      fast=fast)
    num_params = sum(p.numel() for p in model.parameters())
    log.info("%s: %s parameters on %s, %d steps/epoch, %d worker(s)", cfg.model._target_,
             f"{num_params:,}", device, len(data.train), cfg.workers)
    if exchange is not None and not dist_info.enabled:
        log.info("gradient exchange: the %s step (compression.fused=%s)",
                 "fused, compiled" if exchange.fused else "eager", exchange.fused_setting)
    summary: dict[str, Any] = {"config_digest": digest, "num_params": num_params,
                               "host": socket.gethostname(), "pid": os.getpid(),
                               "device": str(device), "workers": cfg.workers,
                               "processes": dist_info.world, "versions": versions()}
    if exchange is not None:
        summary["compression"] = {
            "bits_per_element": exchange.bits, "levels": [exchange.low, exchange.high],
            "payload_bytes_per_worker_step": exchange.payload_bytes,
            "fp32_bytes_per_worker_step": exchange.fp32_bytes,
            "compression_ratio": exchange.fp32_bytes / exchange.payload_bytes,
            "fused_step": exchange.fused is not None}
    if not dist_info.is_main:
        summary_path = None  # rank 0 alone writes
    try:
        trainer.fit(state)
    except Diverged as e:
        log.warning("diverged: %s", e)
        summary.update(status="diverged", metrics={}, objective=worst_objective(cfg.objective),
                       error=str(e))
    except BaseException as e:  # record why the run stopped, then let it propagate
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        summary.update(status=status, metrics={}, objective=None, error=one_line(e),
                       epochs_completed=state.epoch)
        if summary_path is not None:
            write_json_atomic(summary_path, summary)
        run_log.hparams(cfg, {}, status)
        run_log.close()
        raise
    else:
        t_eval = time.perf_counter()
        names = trainer.model_names()
        log.info("final evaluation: %d model(s) (%s), final and best states (each distinct "
                 "state once, all in one pass per batch), on train, val and test", len(names),
                 ", ".join(names))
        metrics = final_metrics(trainer, state, data)
        summary.update(status="completed", metrics=metrics, objective=metrics[cfg.objective],
                       final_eval_s=time.perf_counter() - t_eval)
    summary.update(objective_name=cfg.objective, epochs_completed=state.epoch, step=state.step,
                   train_wall_s=state.wall_s, total_s=time.perf_counter() - t_start,
                   started_at=started_at, finished_at=time.time())
    if exchange is not None and dist_info.enabled:
        summary["compression"]["bytes_sent_by_rank0"] = exchange.bytes_sent
    if summary_path is not None:
        write_json_atomic(summary_path, summary)
    run_log.hparams(cfg, summary["metrics"], summary["status"])
    run_log.close()
    log.info("%s: %s = %s", summary["status"], cfg.objective, summary["objective"])
    if summary["metrics"]:
        log.info("test accuracy: %s", " | ".join(
            f"{name} {100 * summary['metrics'][f'{metric_prefix(name)}test_acc']:.2f}%"
            for name in trainer.model_names()))
    log.info("run directory: %s", run_dir)
    return summary["objective"]


def restore(ckpt: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler, ema: EMA | None,
            exchange: GradientExchange | None, state: TrainState, device: torch.device,
            path: Path) -> list[dict]:
    """Load a checkpoint into the freshly built objects; returns the history it holds."""
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        if exchange is not None:
            exchange.load_state_dict(ckpt["exchange"])
        state.epoch, state.step, state.wall_s = ckpt["epoch"], ckpt["step"], ckpt["wall_s"]
        state.best = {name: {**b, "state": {k: v.to(device) for k, v in b["state"].items()}}
                      for name, b in ckpt["best"].items()}
        return list(ckpt["history"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} does not fit this run ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:120]}): delete it to retrain") from None
