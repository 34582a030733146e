"""The end of a sweep: how many jobs completed, diverged, failed or were busy, and where.

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


class SweepReport:
    def __init__(self) -> None:
        self.results: list[JobResult] = []

    def add(self, returns: Iterable[JobReturn]) -> list[JobResult]:
        new = [outcome(r) for r in returns]
        self.results.extend(new)
        return new

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    def lines(self) -> list[str]:
        parts = [f"{self.count(s)} {LABEL.get(s, s)}" for s in ORDER if self.count(s)]
        out = [f"sweep: {len(self.results)} job(s): {', '.join(parts) or 'none'}"]
        on_slurm = any(r.job for r in self.results)  # then every job, with its SLURM job id
        for r in self.results:
            if r.status != "completed" or on_slurm:
                job = f" (SLURM job {r.job})" if r.job else ""
                reason = f": {r.error}" if r.error else ""
                out.append(f"  {r.status:<9} {r.run_dir}{job}{reason}")
        return out

    def print(self) -> None:
        print("\n".join(self.lines()), flush=True)

    @property
    def exit_status(self) -> int:
        """1 if any job failed or was left to another process, else 0."""
        return int(any(r.status in ("failed", "busy") for r in self.results))


_last: SweepReport | None = None


def new_report() -> SweepReport:
    global _last
    _last = SweepReport()
    return _last


def exit_status() -> int:
    """The exit status of the sweep this process ran (0 after a single run)."""
    return 0 if _last is None else _last.exit_status
