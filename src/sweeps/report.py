"""The end of a sweep: how many jobs completed, diverged, failed or were busy, a table of the
jobs with their objectives and run directories, and the best one.

Sweepers add every job's return here; the entry point exits with `exit_status()` after Hydra
returns, so a sweep with a failed job exits non-zero while its other jobs still ran.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hydra.core.utils import JobReturn

from src.core.errors import one_line
from src.core.files import RUN_FILES, SUMMARY, write_json_atomic
from src.lifecycle.lock import RunDirBusy
from src.lifecycle.record import JobRecord

ORDER = ("completed", "pruned", "diverged", "failed", "busy")
LABEL = {"busy": "in use by another process"}


@dataclass(frozen=True)
class JobResult:
    """What one sweep job returns to its sweeper (a float for sweepers that expect one)."""

    status: str  # completed | pruned (tune.py's pruner stopped it) | diverged | failed | busy
    objective: float | None
    run_dir: str
    error: str | None = None
    job: str | None = None  # the SLURM job that ran it
    ended_as: str | None = None  # the scheduler's state of a job that ended without a result
    objective_name: str | None = None  # what `objective` is, where the run says (summary.json)

    def __float__(self) -> float:
        return math.nan if self.objective is None else float(self.objective)


def record_failure(run_dir: Path, record: JobRecord, reason: str) -> None:
    """Leave a sweep job's failure in its run directory, unless that directory holds a run
    (then the runner has recorded it, or the run is someone's earlier result: left untouched)."""
    if any((run_dir / name).exists() for name in RUN_FILES):
        return
    record.start()
    write_json_atomic(run_dir / SUMMARY, {"status": "failed", "error": reason, "objective": None,
                                          "metrics": {}})


def sweep_failure(e: BaseException, run_dir: Path, record: JobRecord | None) -> JobResult:
    """What a sweep job that raised `e` returns (busy: another process holds its directory;
    else failed, recorded in its directory)."""
    if isinstance(e, RunDirBusy):
        status = "busy"
    else:
        status = "failed"
        if record is not None:
            record_failure(run_dir, record, one_line(e))
    return JobResult(status, None, str(run_dir), one_line(e))


def outcome(ret: JobReturn) -> JobResult:
    """A job's JobResult; a job whose task raised (a launcher failure) counts as failed."""
    hydra_cfg = getattr(ret, "hydra_cfg", None)
    run_dir = str(hydra_cfg.hydra.runtime.output_dir) if hydra_cfg is not None else "?"
    try:
        value = ret.return_value
    except Exception as e:
        return JobResult("failed", None, run_dir, one_line(e))
    if isinstance(value, JobResult):
        return value
    return JobResult("completed", None if value is None else float(value), run_dir)


SHOWN = 20  # a longer sweep's table: the best completed jobs, and every one that was not


def shown_path(run_dir: str) -> str:
    """A run directory as a reader types it: relative to the working folder when inside it."""
    path = Path(run_dir)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return run_dir


class SweepReport:
    """The sweep's last lines: a count per status, a table of its jobs (status, objective, run
    directory, and why a job failed) and its best job. objective: the name of the metric the
    jobs return; maximise: whether higher is better (accuracies)."""

    def __init__(self, objective: str = "objective", maximise: bool | None = None) -> None:
        self.results: list[JobResult] = []
        self.objective, self.direction = objective, maximise

    @property
    def named(self) -> str | None:
        """What the jobs' objectives are: the name their runs give (a pruning experiment's
        prune_potential@0.5), else the sweep's objective; None when the runs give several."""
        names = {r.objective_name for r in self.results if r.objective_name}
        if len(names) > 1:
            return None
        return names.pop() if names else self.objective

    @property
    def maximise(self) -> bool:
        name = self.named or ""
        if self.direction is not None and name == self.objective:
            return self.direction
        return name.endswith("acc") or name.startswith("prune_potential")

    def add(self, returns: Iterable[JobReturn]) -> list[JobResult]:
        new = [outcome(r) for r in returns]
        self.results.extend(new)
        return new

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    def best(self) -> JobResult | None:
        """The best completed job (None: none completed, or their objectives are of several
        kinds, which no one ordering compares)."""
        done = [r for r in self.results if r.status == "completed" and r.objective is not None
                and math.isfinite(r.objective)]
        if not done or self.named is None:
            return None
        return (max if self.maximise else min)(done, key=lambda r: r.objective)

    def lines(self) -> list[str]:
        parts = [f"{self.count(s)} {LABEL.get(s, s)}" for s in ORDER if self.count(s)]
        out = [f"sweep: {len(self.results)} job(s): {', '.join(parts) or 'none'}"]
        if not self.results:
            return out
        rows = self.results
        if len(rows) > SHOWN:  # the best completed ones, and every one that was not
            done = sorted((r for r in rows if r.status == "completed" and r.objective is not None),
                          key=lambda r: r.objective, reverse=self.maximise)
            keep = {id(r) for r in done[:SHOWN // 2]} | {id(r) for r in rows
                                                        if r.status != "completed"}
            rows = [r for r in rows if id(r) in keep]
        name = self.named or "objective"
        width = max(9, len(name))
        out.append(f"  {'status':<9} {name:>{width}}  run directory")
        for r in rows:
            value = "-" if r.objective is None or r.status != "completed" else f"{r.objective:.4g}"
            job = f" (SLURM job {r.job})" if r.job else ""
            reason = f": {r.error}" if r.error else ""
            out.append(f"  {r.status:<9} {value:>{width}}  {shown_path(r.run_dir)}{job}{reason}")
        if len(rows) < len(self.results):
            out.append(f"  ... {len(self.results) - len(rows)} more completed (every run: "
                       f"plots.py runs=<the sweep's folder>)")
        best = self.best()
        if best is not None:
            out.append(f"best: {self.named} = {best.objective:.6g} in "
                       f"{shown_path(best.run_dir)}")
        return out

    def print(self) -> None:
        print("\n".join(self.lines()), flush=True)

    @property
    def exit_status(self) -> int:
        """1 if any job failed or was left to another process, else 0."""
        return int(any(r.status in ("failed", "busy") for r in self.results))


_last: SweepReport | None = None


def new_report(objective: str = "objective", maximise: bool | None = None) -> SweepReport:
    """The report of the sweep this process starts (its jobs return `objective`)."""
    global _last
    _last = SweepReport(objective, maximise)
    return _last


def exit_status() -> int:
    """The exit status of the sweep this process ran (0 after a single run)."""
    return 0 if _last is None else _last.exit_status
