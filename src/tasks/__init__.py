"""The tasks a job runs: the one `task.run` names (classify, regimes), or, with a pruning method,
the prune-and-retrain experiment. Each task module has `run(cfg, run_dir, record)` and
`check_config(cfg)`, the one-line ConfigError for a config it cannot run."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from src.lifecycle.record import JobRecord

Run = Callable[[DictConfig, Path, "JobRecord | None"], float]


def _module(cfg: DictConfig) -> tuple[object, str]:
    if (cfg.get("pruning") or {}).get("method") is not None:  # task=regimes has no pruning
        return importlib.import_module("src.tasks.pruning"), "run_pruning"
    module, _, name = str(cfg.task.run).rpartition(".")
    return importlib.import_module(module), name


def task_run(cfg: DictConfig) -> Run:
    """The function that trains the job `cfg` describes and returns its objective."""
    module, name = _module(cfg)
    return getattr(module, name)


def history_keys(cfg: DictConfig) -> set[str] | None:
    """The keys every history.jsonl record of `cfg`'s run holds, if the task knows them before
    the run (a classify run's); None otherwise."""
    module, _ = _module(cfg)
    keys = getattr(module, "history_keys", None)
    return keys(cfg) if keys is not None else None


def check_config(cfg: DictConfig) -> None:
    """The task's own checks of `cfg` (one-line ConfigError), run before anything is written:
    tune.py runs them once on its first trial's config, so a mistake every trial would make
    stops the search before it creates a study."""
    module, _ = _module(cfg)
    module.check_config(cfg)  # type: ignore[attr-defined]
