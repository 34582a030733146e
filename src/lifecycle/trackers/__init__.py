"""Experiment trackers: where a run's numbers go besides history.jsonl (the `logger` config
group: tensorboard, csv, mlflow, wandb, or a list of them).

Every tracker gets the same things: the run's hyperparameters, every scalar of history.jsonl and
steps.jsonl against the optimizer step (`epoch/<key>`, `step/<key>`), the final metrics and
status, and the run's summary.json where it keeps files (runs draw no figures of their own).

One run is one tracker run, whatever happens to the process:
- opening (the tracker's constructor) checks everything that can fail (the package, the store,
  the folder) before the run writes anything: a tracker that cannot start is one `error:` line;
- the tracker's run id is kept in the run directory (trackers.json): a resumed run (kill -9,
  Ctrl-C, a SLURM requeue) continues the same tracker run;
- `start` gets the records the run kept (its checkpoint's history and the steps up to it): a
  tracker that keeps its own store logs only the points it does not hold yet (asked of the store
  itself), so every point is logged once even where the process died between the tracker's
  write and the checkpoint; the file trackers rewrite theirs to exactly these records.
"""

from __future__ import annotations

import math
import signal
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.core.errors import UserError
from src.core.files import TRACKERS, read_json, write_json_atomic

NAMES = ("tensorboard", "csv", "mlflow", "wandb")
Scalar = bool | int | float | str
# (step, {tag: value}) in the order they were logged: a log interval's `step/...` values, an
# epoch's `epoch/...` values
Point = tuple[int, dict[str, float]]


@dataclass
class TrackedRun:
    """What names a run in a tracker.

    name: the run directory's name (a pruning cell: `<run>/<cell>`); group: the sweep it belongs
    to (tune.py: the study; train.py -m: the sweep's arguments; else the script's name);
    params: its hyperparameters (src/lifecycle/record.py: hparams_of); tags: where it ran
    (run directory, trial number and study, SLURM job)."""

    run_dir: Path
    name: str
    group: str
    params: dict[str, Scalar]
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Logger:
    """The trackers a run logs to ({name: options}, as cfg.logger) and how it is named there."""

    config: Mapping[str, Mapping[str, Any]]
    run: TrackedRun


class Tracker:
    """One tracker of one run; the base logs nothing."""

    name = ""

    def start(self, step: int, kept: list[Point]) -> None:
        """Open or continue the tracker run at optimizer step `step`; `kept`: every point the
        run holds up to there."""

    def log(self, values: dict[str, float], step: int) -> None:
        """Scalars at optimizer step `step` (finite ones only)."""

    def finish(self, status: str, metrics: dict[str, float], files: list[Path]) -> None:
        """The run ended as `status` with these final metrics; `files`: its artifacts."""

    def close(self) -> None:
        """Release what the tracker holds (also after an error)."""


@contextmanager
def shielded() -> Iterator[None]:
    """A Ctrl-C inside this block waits for its end: a tracker's write is never cut in two (a
    KeyboardInterrupt inside MLflow's SQLite transaction leaves its lock held, and the run's
    end, which writes its status, then waits on it forever). Main thread only, where signals
    land; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught and callable(previous):
            previous(signal.SIGINT, None)  # now: the handler that was there (raises, usually)


def finite(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a record, as floats."""
    return {k: float(v) for k, v in values.items()
            if isinstance(v, int | float) and math.isfinite(v)}


class Marks:
    """The last step a tracker's store holds for each key (floor: for every key): a point at or
    below it is not logged again."""

    def __init__(self, last: Mapping[str, int] | None = None, floor: int = -1) -> None:
        self.last, self.floor = dict(last or {}), floor

    def new(self, values: dict[str, float], step: int) -> dict[str, float]:
        fresh = {k: v for k, v in values.items() if step > self.last.get(k, self.floor)}
        for k in fresh:
            self.last[k] = step
        return fresh


def tracker_ids(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The tracker runs this run directory logs to (trackers.json), by tracker."""
    path = Path(run_dir) / TRACKERS
    if not path.exists():
        return {}
    ids = read_json(path)
    return ids if isinstance(ids, dict) else {}


def keep_id(run_dir: Path, name: str, ids: dict[str, Any]) -> None:
    """Record tracker `name`'s run in trackers.json (the run's lock holder alone writes it)."""
    all_ids = tracker_ids(run_dir)
    all_ids[name] = ids
    write_json_atomic(Path(run_dir) / TRACKERS, all_ids)


def writable(folder: Path) -> None:
    """Raise OSError unless a file can be made in `folder` or, where it does not exist yet, in
    its nearest existing parent (tried for real: permission bits say nothing for root, or on a
    read-only mount)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    Path(tempfile.mkdtemp(prefix=".trainkit-probe-", dir=folder)).rmdir()


def missing_package(tracker: str, package: str) -> UserError:
    return UserError(f"logger={tracker} needs the {package} package, which is not installed: "
                     f"pip install {package} (or choose another logger: "
                     f"{', '.join(NAMES)}, or none)")


def open_trackers(logger: Logger) -> list[Tracker]:
    """The trackers of `logger`, each checked (UserError, one line, if one cannot start); none
    has written anything yet."""
    from src.lifecycle.trackers.files import CsvTracker, TensorBoardTracker
    from src.lifecycle.trackers.mlflow_tracker import MlflowTracker
    from src.lifecycle.trackers.wandb_tracker import WandbTracker

    kinds: dict[str, Any] = {"tensorboard": TensorBoardTracker, "csv": CsvTracker,
                             "mlflow": MlflowTracker, "wandb": WandbTracker}
    trackers: list[Tracker] = []
    with shielded():
        try:
            for name, options in logger.config.items():
                if name not in kinds:
                    raise UserError(f"logger.{name}: no such tracker: choose among "
                                    f"{', '.join(NAMES)} (logger=[tensorboard,mlflow] for "
                                    f"several)")
                trackers.append(kinds[name](logger.run, dict(options or {})))
        except BaseException:
            for t in trackers:
                t.close()
            raise
    return trackers
