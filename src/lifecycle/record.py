"""What a run writes: Hydra's record of the job (.hydra/) and its log, history.jsonl (one object
per epoch), summary.json and TensorBoard events."""

from __future__ import annotations

import logging
import math
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
    TENSORBOARD,
    append_jsonl,
    read_jsonl,
    rewrite,
)
from src.core.keys import neutral

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


# TensorBoard's session statuses are success, failure, running and unknown (no "aborted"): a
# pruned or interrupted run is neither a success nor a failure, and its `status` hparam says which.
SESSION_STATUS = {"completed": "STATUS_SUCCESS", "diverged": "STATUS_FAILURE",
                  "failed": "STATUS_FAILURE", "pruned": "STATUS_UNKNOWN",
                  "interrupted": "STATUS_UNKNOWN"}


def session_end(status: str) -> Any:
    """TensorBoard's end-of-session record with the run's real status (torch's add_hparams
    always writes success)."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.metadata import (
        PLUGIN_DATA_VERSION,
        PLUGIN_NAME,
        SESSION_END_INFO_TAG,
    )
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo

    value = SESSION_STATUS.get(status, "STATUS_FAILURE")
    content = HParamsPluginData(session_end_info=SessionEndInfo(status=Status.Value(value)),
                                version=PLUGIN_DATA_VERSION)
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
        plugin_name=PLUGIN_NAME, content=content.SerializeToString()))
    return Summary(value=[Summary.Value(tag=SESSION_END_INFO_TAG, metadata=meta)])


class RunLog:
    """Writes history.jsonl and mirrors every number to TensorBoard (if enabled).

    history: the records already written by the run being resumed (from its checkpoint); the
    file is rewritten to exactly these, and TensorBoard events from optimizer step `step` on are
    purged (every scalar is logged against the optimizer step).
    report: called with each new record once it is written (JobRecord.report).
    """

    def __init__(self, run_dir: Path, tensorboard: bool, history: list[dict], step: int,
                 write: bool = True,
                 report: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.history = list(history)
        self.report = report
        self.write = write  # False on every rank but 0 of a torchrun job
        self.writer = None
        if not write:
            return
        rewrite(self.run_dir / HISTORY, self.history)
        steps = self.run_dir / STEPS  # per-interval records past the checkpoint are dropped
        kept = [r for r in read_jsonl(steps) if r["step"] <= step] if step else []
        rewrite(steps, kept)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.run_dir / TENSORBOARD),
                                        purge_step=step or None)

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None and math.isfinite(value):
            self.writer.add_scalar(tag, value, step)

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
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float):
                self.scalar(f"{group}/{key}", float(value), record["step"])

    def hparams(self, cfg: DictConfig, metrics: dict[str, float], status: str,
                hydra_cfg: DictConfig | None = None) -> None:
        """Record the run in TensorBoard's HPARAMS tab: the option chosen in each config group,
        the settings its command line set and the key hyperparameters (lists as text), its
        final metrics, and its status (a diverged or failed run is not shown as a success)."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        hp = hparams_of(cfg, hydra_cfg)
        hp["status"] = status
        mt = {f"hparam/{k}": v for k, v in metrics.items()
              if isinstance(v, int | float) and math.isfinite(v)}
        experiment, start, _ = hparams_summaries(hp, mt)
        for summary in (experiment, start, session_end(status)):
            self.writer.file_writer.add_summary(summary)
        for tag, value in mt.items():
            self.writer.add_scalar(tag, value)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
