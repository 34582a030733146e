"""The life of a run, one for every kind: classify and regimes runs, pruning cells (and the
stacked runs to come).

    identity  the config digest; a run that finished with this config is reused, one that
              finished with another is refused
    resume    the run's checkpoint (same digest) is loaded into the freshly built task
    trackers  the run's experiment trackers (cfg.logger), checked before anything is written
    records   Hydra's record of the job, then history.jsonl, steps.jsonl and the trackers
              (RunLog), cut back to the checkpoint
    train     the task trains, saving through `save` (one payload builder: format, digest,
              history, and the task's own state)
    summary   status (completed, diverged, pruned; failed or interrupted, then re-raised), the
              metrics and the objective (the worst one for a diverged run, the last reported
              value for a pruned one), timings

A task supplies only what is its own (the Task protocol): how to build its parts, its state,
and how to train.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from src.core.errors import CheckpointError, one_line
from src.core.files import CHECKPOINT, SUMMARY, write_json_atomic
from src.core.keys import worst_objective
from src.engine.trainer import Diverged
from src.lifecycle.checkpoint import FORMAT, load_checkpoint, save_atomic
from src.lifecycle.identity import finished_result, reused_objective, versions
from src.lifecycle.lock import batch_job
from src.lifecycle.record import JobRecord, RunLog
from src.lifecycle.trackers import Logger, Tracker, open_trackers

log = logging.getLogger(__name__)


class Pruned(Exception):
    """A tune.py trial's pruner stopped the run at `step` (an epoch, or a regimes step), where
    its objective was `value`."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"pruned at {step} with {value}")
        self.step, self.value = step, value


class Stopped(KeyboardInterrupt):
    """The scheduler asked the job to stop (src/cli/batch.py): the run checkpoints at the record
    it has just written and ends as interrupted, to be resumed from there."""


@dataclass
class Outcome:
    """How a task's training ended: `completed` or `diverged`, its metrics, and more summary
    fields of its own. objective None: metrics[objective name] when completed, else the worst."""

    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    objective: float | None = None
    error: str | None = None


class Task(Protocol):
    """What one kind of run supplies to its lifecycle."""

    def facts(self) -> dict[str, Any]:
        """Summary fields known before training (parameters, device, settings)."""

    def progress(self) -> dict[str, Any]:
        """Summary fields of how far it trained (epochs_completed, step, train_wall_s)."""

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's task part (the lifecycle adds format, digest and history)."""

    def load_state_dict(self, ckpt: dict[str, Any]) -> int:
        """Resume from a checkpoint of this config; returns the step it resumes at."""

    def train(self, run_log: RunLog, save: Callable[..., None]) -> Outcome:
        """Train to the end; `save(*also)` checkpoints (also: more paths for the same payload);
        raising Diverged ends the run as diverged."""


@dataclass
class Result:
    """What execute returns: the run's objective and summary; reused: it had finished before."""

    objective: float | None
    summary: dict[str, Any]
    reused: bool = False


class Lifecycle:
    """One run in `run_dir` (see the module docstring).

    objective_name: the metric a sweep gets back; None for a pruning cell, whose result is a
    record of its own (`result`) with no objective, no Hydra record and no HPARAMS entry.
    logger: its trackers (record.logger_for), or None; write: False on every rank but 0 of a
    torchrun job (which logs nothing to trackers either).
    """

    def __init__(self, run_dir: Path, digest: str, objective_name: str | None, *,
                 record: JobRecord | None = None, result: Path | None = None,
                 logger: Logger | None = None, write: bool = True) -> None:
        self.run_dir, self.digest = Path(run_dir), digest
        self.objective_name, self.record = objective_name, record
        self.result = result if result is not None else self.run_dir / SUMMARY
        self.checkpoint_path = self.run_dir / CHECKPOINT
        self.logger, self.write = logger, write
        self.history: list[dict] = []

    def finished(self) -> dict | None:
        done = finished_result(self.result, self.digest)
        if done is not None:
            log.info("run in %s already %s; objective %s", self.run_dir, done["status"],
                     done.get("objective"))
        return done

    def checkpoint(self) -> dict | None:
        """The run's checkpoint (written by this config), or None if it has none."""
        if not self.checkpoint_path.exists():
            return None
        return load_checkpoint(self.checkpoint_path, self.digest)

    def save(self, state: dict[str, Any], *also: Path) -> None:
        """The one checkpoint payload: format, digest, the task's state and the history."""
        if not self.write:
            return
        payload = {"format": FORMAT, "config_digest": self.digest, **state,
                   "history": self.run_log.history}
        for path in (self.checkpoint_path, *also):
            save_atomic(payload, path)

    def restore(self, task: Task, ckpt: dict) -> int:
        try:
            step = task.load_state_dict(ckpt)
            self.history = list(ckpt["history"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise CheckpointError(f"checkpoint {self.checkpoint_path} does not fit this run "
                                  f"({type(e).__name__}: {str(e).splitlines()[0][:120]}): "
                                  f"delete it to retrain") from None
        return step

    def saver(self, task: Task) -> Callable[..., None]:
        """`save(*also)` for `task`: its checkpoint now (also: more paths for the same payload)."""

        def save(*also: Path) -> None:
            self.save(task.state_dict(), *also)
        return save

    def execute(self, build: Callable[[dict | None], Task]) -> Result:
        """Reuse, or build (given the checkpoint it will resume from, or None), resume, train
        and summarise the run."""
        task = self.begin(build)
        if task is None:
            return self.reused
        try:
            try:
                outcome = task.train(self.run_log, self.saver(task))
            except Diverged as e:
                log.warning("diverged: %s", e)
                outcome = Outcome("diverged", error=str(e))
            except Pruned as e:  # raised once the record is written: checkpoint that point
                self.saver(task)()
                outcome = Outcome("pruned", fields={"pruned_at": e.step}, objective=e.value)
            except Stopped:  # likewise, then it ends as interrupted
                self.saver(task)()
                raise
        except BaseException as e:  # record why the run stopped, then let it propagate
            self.abort(task, e)
            raise
        return self.end(task, outcome)

    def begin(self, build: Callable[[dict | None], Task]) -> Task | None:
        """Everything before training: None if the run finished before (`self.reused` holds
        its result), else its task, built, resumed and with its records open."""
        self.t_start, self.started_at = time.perf_counter(), time.time()
        done = self.finished()
        if done is not None:
            objective = (reused_objective(done, self.objective_name)
                         if self.objective_name is not None else None)
            self.reused = Result(objective, done, reused=True)
            return None
        trackers: list[Tracker] = (open_trackers(self.logger)
                                   if self.write and self.logger is not None else [])
        try:
            ckpt = self.checkpoint()
            task = build(ckpt)
            step = self.restore(task, ckpt) if ckpt is not None else 0
            if self.write and self.record is not None:
                self.record.start()
            if ckpt is not None:  # said once the run's log file is open
                log.info("resuming %s from its checkpoint (step %d)", self.run_dir, step)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.run_log = RunLog(self.run_dir, trackers, self.history, step, write=self.write,
                                  report=self.record.report if self.record is not None else None)
        except BaseException:
            for tracker in trackers:
                tracker.close()
            raise
        self.summary: dict[str, Any] = {"config_digest": self.digest, **task.facts()}
        if self.objective_name is not None:
            self.summary.update(host=socket.gethostname(), pid=os.getpid(), versions=versions())
            if batch_job() is not None:  # a SLURM job: its id, for sacct and its logs
                self.summary["batch_job"] = batch_job()
        return task

    def abort(self, task: Task, e: BaseException) -> None:
        """The run stopped on `e` (Ctrl-C: interrupted; else failed): its summary says why."""
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        self.summary.update(status=status, metrics={}, objective=None, error=one_line(e),
                            **task.progress())
        # a cell leaves no result: its experiment's summary records why
        self.close(self.summary, result=self.objective_name is not None)

    def end(self, task: Task, outcome: Outcome) -> Result:
        """The summary of a run that trained to its end (or diverged)."""
        summary = self.summary
        summary["status"] = outcome.status
        if self.objective_name is not None:
            objective = outcome.objective
            if objective is None:
                objective = (outcome.metrics[self.objective_name]
                             if outcome.status == "completed"
                             else worst_objective(self.objective_name))
            summary.update(metrics=outcome.metrics, objective=objective,
                           objective_name=self.objective_name)
        else:
            summary.update(outcome.metrics)
        if outcome.error is not None:
            summary["error"] = outcome.error
        summary.update(**task.progress(), **outcome.fields)
        if self.objective_name is not None:
            summary.update(total_s=time.perf_counter() - self.t_start,
                           started_at=self.started_at, finished_at=time.time())
        self.close(summary)
        if self.objective_name is not None:
            why = outcome.fields.get("stop_reason")
            log.info("%s%s: %s = %s", outcome.status, f" ({why})" if why else "",
                     self.objective_name, summary["objective"])
        return Result(summary.get("objective"), summary)

    def close(self, summary: dict[str, Any], result: bool = True) -> None:
        """Write the summary (rank 0), end the tracker runs, and close the records."""
        try:
            if self.write and result:
                write_json_atomic(self.result, summary)
            metrics = summary["metrics"] if self.objective_name is not None else summary
            self.run_log.finish(summary["status"], metrics, [self.result] if result else [])
        finally:
            self.run_log.close()
