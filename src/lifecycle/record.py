"""What a run writes: Hydra's record of the job (.hydra/) and its log, history.jsonl (one object
per epoch) and steps.jsonl, and what goes to its trackers (src/lifecycle/trackers)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from src.core.files import (
    GROUPS,
    HISTORY,
    HYDRA_DIR,
    STEPS,
    append_jsonl,
    read_jsonl,
    rewrite,
)
from src.core.keys import neutral
from src.lifecycle.lock import batch_job
from src.lifecycle.trackers import Logger, Point, TrackedRun, Tracker, shielded

# Whose work this thread is doing where one process runs many runs (stacked runs): a run's
# lines go to its own log file only, and to the console only if they warn; the lines of their
# shared work (SHARED) go to the console only. Outside such a process (None) lines go everywhere.
SHARED = "shared"
_RUN: ContextVar[Path | str | None] = ContextVar("trainkit_run", default=None)


@contextmanager
def logging_for(run_dir: Path | None) -> Iterator[None]:
    """Log lines in this block belong to the run in `run_dir` (None: to the shared work)."""
    token = _RUN.set(SHARED if run_dir is None else Path(run_dir).resolve())
    try:
        yield
    finally:
        _RUN.reset(token)


class OwnLines(logging.Filter):
    """A run's log file takes the lines of its own run and those of no run in particular."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir

    def filter(self, record: logging.LogRecord) -> bool:
        run = _RUN.get()
        return run is None or run == self.run_dir


class QuietRuns(logging.Filter):
    """The console of many runs at once: their warnings and errors, not their progress."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _RUN.get() in (None, SHARED) or record.levelno >= logging.WARNING


@contextmanager
def quiet_runs() -> Iterator[None]:
    """Within this block, the console shows no run's info lines (QuietRuns)."""
    quiet, handlers = QuietRuns(), list(logging.getLogger().handlers)
    for h in handlers:
        h.addFilter(quiet)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(quiet)


class JobRecord:
    """Hydra's record of a job (`.hydra/config.yaml`, `hydra.yaml`, `overrides.yaml`) and the
    job's log file (`<job name>.log`), written when the run starts writing, not before.

    Hydra itself would write them before the task runs (train.yaml sets hydra.output_subdir to
    null and logs to the console only), so a command that is rejected, or that finds its run
    finished, would rewrite a finished run's record. The job wrapper opens one JobRecord per
    job and hands it to the task, whose lifecycle starts it right before the run writes into
    the directory.

    report: called with each record the run appends to history.jsonl (an epoch; a regimes
    observation point), or None: a tune.py trial's pruner, which raises lifecycle.run.Pruned to
    stop the run, or a scheduler's stop request (lifecycle.run.Stopped).
    links: name -> file, made as relative links in the run directory when the run starts
    writing (a SLURM job's logs).
    """

    def __init__(self, run_dir: Path, task_cfg: DictConfig, hydra_cfg: DictConfig,
                 report: Callable[[dict[str, Any]], None] | None = None,
                 links: dict[str, Path] | None = None) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.task_cfg, self.hydra_cfg, self.report = task_cfg, hydra_cfg, report
        self.links = links or {}
        self.handler: logging.Handler | None = None

    def start(self) -> None:
        if self.handler is not None:
            return
        out = self.run_dir / HYDRA_DIR
        out.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.task_cfg, out / "config.yaml")
        OmegaConf.save(OmegaConf.create({"hydra": self.hydra_cfg}), out / "hydra.yaml")
        OmegaConf.save(self.hydra_cfg.overrides.task, out / "overrides.yaml")
        for name, target in self.links.items():  # e.g. the SLURM job's logs (src/cli/batch.py)
            link = self.run_dir / name
            temporary = link.with_name(f".{name}.{os.getpid()}")
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(os.path.relpath(Path(target).resolve(), self.run_dir))
            temporary.replace(link)
        self.handler = logging.FileHandler(self.run_dir / f"{self.hydra_cfg.job.name}.log")
        self.handler.setFormatter(logging.Formatter(
            "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        self.handler.addFilter(OwnLines(self.run_dir))
        logging.getLogger().addHandler(self.handler)

    def close(self) -> None:
        if self.handler is not None:
            logging.getLogger().removeHandler(self.handler)
            self.handler.close()
            self.handler = None


# Shown in the HPARAMS tab next to the config-group choices and the command line's settings.
KEY_HPARAMS = ("optimizer.lr", "optimizer.weight_decay", "optimizer.momentum", "batch_size",
               "epochs", "seed", "workers", "num_bits", "averaging.decays", "task.dt",
               "task.temp", "task.alpha")


_ABSENT = object()


def hparams_of(cfg: DictConfig,
               hydra_cfg: DictConfig | None = None) -> dict[str, bool | int | float | str]:
    """The hyperparameters a run is compared by: `<group>` = chosen option, then the keys its
    command line set and KEY_HPARAMS, as scalars (lists and None as text).

    hydra_cfg: the job's Hydra config (its record's); None: this process's, if any."""
    hp: dict[str, bool | int | float | str] = {}
    keys = list(KEY_HPARAMS)
    if hydra_cfg is None and HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
    if hydra_cfg is not None:
        for group in GROUPS:
            choice = hydra_cfg.runtime.choices.get(group)
            if choice is not None:
                hp[group] = str(choice)
        typed = [o.split("=", 1)[0].lstrip("+~") for o in hydra_cfg.overrides.task]
        keys = [k for k in typed if k not in GROUPS and not neutral(k)] + keys
    for key in dict.fromkeys(keys):
        if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            continue
        value = OmegaConf.select(cfg, key)
        if isinstance(value, DictConfig):
            continue
        if OmegaConf.is_list(value):
            value = str(OmegaConf.to_container(value))
        hp[key] = value if isinstance(value, bool | int | float | str) else str(value)
    return hp


def sweep_name(hydra_cfg: DictConfig) -> str:
    """What a job's sweep is called in a tracker: tune.py's study, train.py -m's arguments as
    typed (src/sweeps/grid.py), else the script's name (train)."""
    sweeper = hydra_cfg.get("sweeper") or {}
    for key in ("study_name", "sweep_name"):  # set in the jobs of a sweep only
        if sweeper.get(key):
            return str(sweeper[key])
    return str(hydra_cfg.job.name)


def logger_for(cfg: DictConfig, run_dir: Path, hydra_cfg: DictConfig | None, *,
               name: str | None = None, more: dict[str, Any] | None = None) -> Logger:
    """The trackers of the run `cfg` in `run_dir` (cfg.logger) and its names there.

    name: its name in the trackers (default: the run directory's); more: hyperparameters of
    its own (a pruning cell's keep ratio)."""
    run_dir = Path(run_dir).resolve()
    tags = {"run_dir": str(run_dir), "job_type": "run"}
    group = "train"
    if hydra_cfg is not None:
        group = sweep_name(hydra_cfg)
        sweeper = hydra_cfg.get("sweeper") or {}
        if sweeper.get("trial") is not None:
            tags.update(trial=str(sweeper.trial), study=str(sweeper.study_name),
                        job_type="trial")
    job = batch_job()
    if job is not None:
        tags["batch_job"] = str(job)
    params = {**hparams_of(cfg, hydra_cfg), **(more or {})}
    config = OmegaConf.to_container(cfg.logger, resolve=True) if cfg.get("logger") else {}
    return Logger(config, TrackedRun(run_dir, name or run_dir.name, group, params, tags))


def points(steps: list[dict], epochs: list[dict]) -> list[Point]:
    """Step and epoch records as tracker points, by step (a log interval before the epoch that
    ends at the same step, as they were logged)."""
    out = [(r["step"], 0, tagged("step", r)) for r in steps]
    out += [(r["step"], 1, tagged("epoch", r)) for r in epochs]
    return [(step, values) for step, _, values in sorted(out, key=lambda p: p[:2])]


def tagged(group: str, record: dict) -> dict[str, float]:
    return {f"{group}/{k}": float(v) for k, v in record.items()
            if k != "step" and isinstance(v, int | float)}


class RunLog:
    """Writes history.jsonl and steps.jsonl, and hands every number to the run's trackers.

    history: the records already written by the run being resumed (from its checkpoint); the
    files are rewritten to exactly these (and steps up to optimizer step `step`), and each
    tracker starts from them (trackers: opened by open_trackers; every scalar is logged against
    the optimizer step).
    report: called with each new record once it is written (JobRecord.report).
    """

    def __init__(self, run_dir: Path, trackers: list[Tracker], history: list[dict], step: int,
                 write: bool = True,
                 report: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.history = list(history)
        self.report = report
        self.write = write  # False on every rank but 0 of a torchrun job
        self.trackers: list[Tracker] = []
        if not write:
            return
        rewrite(self.run_dir / HISTORY, self.history)
        steps = self.run_dir / STEPS  # per-interval records past the checkpoint are dropped
        kept = [r for r in read_jsonl(steps) if r["step"] <= step] if step else []
        rewrite(steps, kept)
        held = points(kept, self.history)
        with shielded():
            for tracker in trackers:
                tracker.start(step, held)
                self.trackers.append(tracker)

    def append(self, record: dict) -> None:
        """One epoch's record: appended to history.jsonl and logged as scalars at its last step."""
        self.history.append(record)
        self._append(HISTORY, record, "epoch")
        if self.report is not None:
            self.report(record)

    def append_step(self, record: dict) -> None:
        """One log interval's record (train loss and accuracy over the interval, level usage)."""
        self._append(STEPS, record, "step")

    def _append(self, name: str, record: dict, group: str) -> None:
        if not self.write:
            return
        append_jsonl(self.run_dir / name, record)
        if not self.trackers:  # logger=none: no Ctrl-C shield to install on every record
            return
        values = tagged(group, record)
        with shielded():
            for tracker in self.trackers:
                tracker.log(values, record["step"])

    def finish(self, status: str, metrics: dict[str, Any], files: list[Path]) -> None:
        """The run ended: its status, final metrics (non-finite ones left out) and files (its
        summary.json) go to every tracker (TensorBoard: the HPARAMS tab's entry)."""
        with shielded():
            for tracker in self.trackers:
                tracker.finish(status, metrics, files)

    def close(self) -> None:
        with shielded():
            for tracker in self.trackers:
                tracker.close()
            self.trackers = []
