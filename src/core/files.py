"""The run-directory contract: the names of a run's files, the conf/ folder and its config
groups, and JSON written atomically. Every layer reads these facts from here."""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

CONF = Path(__file__).resolve().parents[2] / "conf"
# The config groups whose chosen option a run records (.hydra/hydra.yaml's runtime.choices),
# in the order --help lists them. conf/trainer/ (one option), conf/hydra/ and conf/logger/ (where
# the numbers go, not what they are) are not among them.
GROUPS = ("task", "dataset", "model", "optimizer", "scheduler", "averaging", "augment",
          "compression", "pruning", "lr_grid", "experiment", "debug")

HYDRA_DIR = ".hydra"  # Hydra's record of the job: config.yaml, hydra.yaml, overrides.yaml
CONFIG = f"{HYDRA_DIR}/config.yaml"
CHECKPOINT = "checkpoint.pt"
HISTORY = "history.jsonl"  # one record per epoch (regimes: per measured checkpoint)
STEPS = "steps.jsonl"  # one record per log interval
SUMMARY = "summary.json"
TENSORBOARD = "tb"
TRACKERS = "trackers.json"  # the run's ids in its experiment trackers (src/lifecycle/trackers)
CSV_DIR = "csv"  # logger=csv: metrics.csv (every scalar by step) and run.csv (one row)
RUN_FILES = (SUMMARY, HISTORY, CHECKPOINT)  # a directory holding any of them holds a run
FINISHED = ("completed", "diverged", "pruned")  # statuses a rerun reuses, never retrains


def kept_checkpoint(epoch: int) -> str:
    """The name of a checkpoint kept beside the last one (trainer.keep_epochs)."""
    return f"checkpoint_epoch{epoch}.pt"


def clean(value: Any) -> Any:
    """JSON has no NaN or Infinity: non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(clean(obj), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def check_writable(path: Path) -> None:
    """Raise OSError where a file cannot be written at path: a directory stands there, or its
    folder takes no new file (tried for real: permission bits say nothing for root, or on a
    read-only mount)."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    fd, probe = tempfile.mkstemp(prefix=".trainkit-probe-", dir=path.parent)
    os.close(fd)
    os.unlink(probe)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_history(run_dir: Path) -> list[dict]:
    return read_jsonl(Path(run_dir) / HISTORY)


def rewrite(path: Path, records: list[dict]) -> None:
    """Replace a JSON-lines file with `records`, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(clean(r), allow_nan=False) + "\n" for r in records))
    os.replace(tmp, path)


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(clean(record), allow_nan=False) + "\n")


def remove_if_empty(run_dir: Path, existed: Path | None = None) -> None:
    """Remove a job's directory that holds nothing (made for a job that wrote nothing), and,
    given `existed` (the nearest folder above it that was there before the command), the empty
    folders made between them (outputs/runs/ of a first command that was refused)."""
    folder, stop = run_dir.resolve(), existed.resolve() if existed is not None else None
    while folder != Path.cwd().resolve():
        try:
            folder.rmdir()
        except OSError:  # not empty, already gone, or not ours to remove
            return
        if stop is None or folder.parent == stop or stop not in folder.parents:
            return
        folder = folder.parent
