"""Load run directories into tables: one row per run, or per run and epoch; group and aggregate.

A run directory is any folder holding summary.json or history.jsonl next to Hydra's .hydra/.
Config values appear as flat dotted columns (`optimizer.lr`, `scheduler._target_`), plus one
column per config group choice (`choice.scheduler` = `cosine`), so runs group by what a user typed.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from src.errors import ConfigError
from src.run_log import HISTORY, STEPS, SUMMARY, read_json, read_jsonl

CELLS = "cells"  # a pruning run's per-cell logs: part of that run, not runs of their own

GROUPS = ("dataset", "model", "optimizer", "scheduler", "averaging", "compression", "pruning",
          "task", "experiment", "lr_grid")


@dataclass
class Run:
    path: Path
    config: dict[str, Any]  # flat: dotted keys
    overrides: list[str]
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.summary.get("status", "missing")

    def steps(self) -> list[dict]:
        return read_jsonl(self.path / STEPS)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists become tuples (hashable, groupable)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tuple(tree) if isinstance(tree, list) else tree}


def load_run(path: Path) -> Run:
    hydra_dir = path / ".hydra"
    config = yaml.safe_load((hydra_dir / "config.yaml").read_text()) if (
        hydra_dir / "config.yaml").exists() else {}
    flat = flatten(config or {})
    overrides = yaml.safe_load((hydra_dir / "overrides.yaml").read_text()) if (
        hydra_dir / "overrides.yaml").exists() else []
    choices = {}
    if (hydra_dir / "hydra.yaml").exists():
        hydra_cfg = yaml.safe_load((hydra_dir / "hydra.yaml").read_text())
        runtime_choices = hydra_cfg.get("hydra", {}).get("runtime", {}).get("choices", {})
        choices = {f"choice.{g}": runtime_choices.get(g) for g in GROUPS}
    summary = read_json(path / SUMMARY) if (path / SUMMARY).exists() else {}
    return Run(path=path, config={**flat, **choices}, overrides=list(overrides or []),
               summary=summary, history=read_jsonl(path / HISTORY))


def find_runs(pattern: str | Path) -> list[Run]:
    """Runs at, below or matching `pattern` (a run dir, a multirun folder or a glob)."""
    found: set[Path] = set()
    for match in glob.glob(str(Path(pattern).expanduser())):
        root = Path(match)
        for marker in (SUMMARY, HISTORY):
            found.update(p.parent for p in (root / marker, *root.rglob(marker))
                         if p.is_file() and p.parent.parent.name != CELLS)
    if not found:
        raise ConfigError(f"runs={pattern} matches no run directory (none holds {SUMMARY} or "
                          f"{HISTORY}): point runs= at a train.py output folder")
    return [load_run(p) for p in sorted(found)]


def runs_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per run: config columns, `status`, `path` and every summary metric."""
    rows = [{**r.config, "path": str(r.path), "status": r.status,
             **r.summary.get("metrics", {})} for r in runs]
    return pd.DataFrame(rows)


def history_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per run and epoch: config columns, `path` and the history keys."""
    rows = [{**r.config, "path": str(r.path), "status": r.status, **record}
            for r in runs for record in r.history]
    return pd.DataFrame(rows)


def varying_keys(frame: pd.DataFrame, runs: list[Run],
                 ignore: tuple[str, ...] = ("seed",)) -> list[str]:
    """The keys a sweep changed: overridden on the command line with different values across
    runs, minus `ignore`. A group override (optimizer=sgd,adam) gives its `choice.` column."""
    keys = []
    for r in runs:
        for override in r.overrides:
            key = override.split("=", 1)[0].lstrip("+~")
            column = f"choice.{key}" if key in GROUPS else key
            if column not in keys and column not in ignore:
                keys.append(column)
    return [c for c in keys if c in frame and frame[c].astype(str).nunique(dropna=False) > 1]


def aggregate(frame: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean, std and count of `metrics` over the runs (e.g. seeds) sharing the `by` values.

    NaN (a diverged run's missing metric) is left out of mean and std and not counted.
    """
    missing = [k for k in [*by, *metrics] if k not in frame.columns]
    if missing:
        raise ConfigError(f"{missing} are not columns of these runs: use config keys such as "
                          f"optimizer.lr or metrics such as val_acc")
    keys = frame[by].astype(str) if by else None
    grouped = frame[metrics].groupby([keys[c] for c in by] if by else lambda _: "all")
    out = grouped.agg(["mean", "std", "count"])
    out.columns = [f"{m}_{stat}" for m, stat in out.columns]
    return out.reset_index()
