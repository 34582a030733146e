"""Read a run back from each tracker's own store: MLflow's client on the SQLite file, W&B's
offline files (through wandb's protobuf records), TensorBoard's event reader, the CSV files."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.lifecycle.trackers.wandb_tracker import read_records


def mlflow_runs(db: Path, experiment: str | None = None) -> list[Any]:
    """The MLflow runs in the SQLite store `db` (of one experiment, or all)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiments = client.search_experiments()
    ids = [e.experiment_id for e in experiments if experiment in (None, e.name)]
    return client.search_runs(ids) if ids else []


def mlflow_series(db: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@dataclass
class WandbRun:
    """Every offline start of one W&B run (one folder each), read from its .wandb files."""

    ids: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)
    config: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_codes: list[int] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    starts: int = 0

    def series(self, key: str) -> list[tuple[int, float]]:
        return sorted((row["_step"], row[key]) for row in self.rows if key in row)


def wandb_run(folder: Path) -> WandbRun:
    """The W&B run(s) whose offline files lie under `folder`/wandb."""
    out = WandbRun()
    for path in sorted((folder / "wandb").glob("offline-run-*/run-*.wandb")):
        out.starts += 1
        for record in read_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                out.ids.add(record.run.run_id)
                out.groups.add(record.run.run_group)
                out.names.add(record.run.display_name)
                out.config.update({u.key: json.loads(u.value_json)
                                   for u in record.run.config.update})
            elif kind == "history":
                out.rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                 for i in record.history.item})
            elif kind == "summary":
                out.summary.update({u.key or "/".join(u.nested_key): json.loads(u.value_json)
                                    for u in record.summary.update})
            elif kind == "exit":
                out.exit_codes.append(record.exit.exit_code)
            elif kind == "files":
                out.files += [f.path for f in record.files.files]
    return out


def tensorboard_series(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return sorted((e.step, e.value) for e in events.Scalars(tag))


def csv_series(run_dir: Path, key: str) -> list[tuple[int, float]]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return sorted((int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key))
