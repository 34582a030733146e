"""Load run directories into tables: one row per run, or per run and epoch; aggregate over seeds.

A run directory is any folder holding summary.json or history.jsonl (a pruning run's cells and
submitit's job folders are parts of runs, not runs). Config values appear as flat dotted columns
(`optimizer.lr`, `scheduler._target_`), plus one column per config group choice
(`choice.scheduler` = `cosine`), so runs group by what a user typed. Files are read as data only
(YAML with the safe loader, JSON): nothing in a run directory from someone else runs code.
"""

from __future__ import annotations

import glob
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from src.core.errors import ConfigError
from src.core.files import GROUPS, HISTORY, STEPS, SUMMARY
from src.core.keys import flatten as flatten_config

log = logging.getLogger(__name__)

# Folders inside a run (or sweep) that are not runs of their own: pruning cells, submitit's
# logs, and the trackers' copies of a run's summary.json (W&B's offline folders in the run, an
# MLflow store's artifacts/)
PARTS = ("cells", ".submitit", "wandb", "artifacts")


@dataclass
class Run:
    path: Path
    config: dict[str, Any]  # flat: dotted keys, and choice.<group>
    overrides: list[str]
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)

    @property
    def status(self) -> str:
        """completed | diverged | failed | interrupted, or unfinished (no summary yet)."""
        return self.summary.get("status", "unfinished")

    @property
    def name(self) -> str:
        return self.path.name

    def steps(self) -> list[dict]:
        return read_records(self.path / STEPS)


def flatten(tree: Any) -> dict[str, Any]:
    """A config as dotted keys (src/core/keys.py: flatten), lists as tuples (hashable, so runs
    group by them)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in flatten_config(tree).items()}


def read_records(path: Path) -> list[dict]:
    """A JSON-lines file; a half-written last line (a run killed mid-write) is left out."""
    if not path.exists():
        return []
    lines = [x for x in path.read_text().splitlines() if x.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError:
            if i == len(lines) - 1:
                log.warning("%s: its last line is incomplete (the run was stopped while "
                            "writing it): left out", path)
                break
            raise ConfigError(f"{path} line {i + 1} is not JSON: the file was edited or "
                              f"damaged; restore it or leave this run out of runs=") from None
    return records


def read_yaml(path: Path) -> Any:
    if not path.exists():
        return None
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise ConfigError(f"{path} is not valid YAML: restore it, or leave this run out of "
                          f"runs=") from None


def load_run(path: Path) -> Run:
    hydra_dir = path / ".hydra"
    config = read_yaml(hydra_dir / "config.yaml")
    flat = flatten(config if isinstance(config, dict) else {})
    overrides = read_yaml(hydra_dir / "overrides.yaml")
    hydra_cfg = read_yaml(hydra_dir / "hydra.yaml") or {}
    choices = (hydra_cfg.get("hydra", {}).get("runtime", {}).get("choices", {})
               if isinstance(hydra_cfg, dict) else {})
    chosen = {f"choice.{g}": choices.get(g) for g in GROUPS if choices.get(g) is not None}
    summary: dict[str, Any] = {}
    if (path / SUMMARY).exists():
        try:
            summary = json.loads((path / SUMMARY).read_text())
        except ValueError:
            raise ConfigError(f"{path / SUMMARY} is not JSON: the file was edited or damaged; "
                              f"restore it or leave this run out of runs=") from None
    return Run(path=path, config={**flat, **chosen},
               overrides=[str(o) for o in overrides] if isinstance(overrides, list) else [],
               summary=summary if isinstance(summary, dict) else {},
               history=read_records(path / HISTORY))


def run_dirs(root: Path) -> Iterable[Path]:
    for marker in (SUMMARY, HISTORY):
        for p in (root / marker, *root.rglob(marker)):
            if p.is_file() and not any(part in PARTS for part in p.relative_to(root).parts):
                yield p.parent


def find_runs(patterns: str | Path | list[str]) -> list[Run]:
    """Runs at, below or matching the patterns (run dirs, multirun folders or globs)."""
    if isinstance(patterns, str | Path):
        patterns = [str(patterns)]
    found: set[Path] = set()
    for pattern in patterns:
        for match in glob.glob(str(Path(pattern).expanduser())):
            found.update(run_dirs(Path(match)))
    if not found:
        raise ConfigError(f"runs={','.join(map(str, patterns))} matches no run directory "
                          f"(none holds {SUMMARY} or {HISTORY}): point runs= at a train.py "
                          f"output folder, e.g. runs=outputs/runs")
    return [load_run(p) for p in sorted(found)]


def runs_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per run: config columns, `status`, `path` and every summary metric."""
    rows = [{**r.config, "path": str(r.path), "status": r.status,
             **r.summary.get("metrics", {})} for r in runs]
    return numeric(pd.DataFrame(rows))


def history_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per run and epoch: config columns, `path` and the history keys."""
    rows = [{**r.config, "path": str(r.path), "status": r.status, **record}
            for r in runs for record in r.history]
    return numeric(pd.DataFrame(rows))


def numeric(frame: pd.DataFrame) -> pd.DataFrame:
    """JSON null (a diverged run's non-finite value) is NaN, never a number."""
    return frame.replace({None: np.nan}).infer_objects()


def aggregate(frame: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean, std and count of `metrics` over the runs (e.g. seeds) sharing the `by` values.

    NaN (a diverged run's missing metric) is left out of mean and std and not counted.
    """
    missing = [k for k in [*by, *metrics] if k not in frame.columns]
    if missing:
        raise ConfigError(f"{missing} are not columns of these runs: use config keys such as "
                          f"optimizer.lr or metrics such as val_acc")
    values = frame[metrics].apply(pd.to_numeric, errors="coerce")
    keys = [frame[c].astype(str) for c in by] if by else (lambda _: "all")
    out = values.groupby(keys).agg(["mean", "std", "count"])
    out.columns = [f"{m}_{stat}" for m, stat in out.columns]
    return out.reset_index()
