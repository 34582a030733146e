"""A job that SLURM runs through Hydra's submitit launcher (hydra/launcher=submitit_slurm).

- Its SLURM job id goes into the run's summary (`batch_job`) and the sweep's last lines, and
  `slurm.out` / `slurm.err` in the run directory link submitit's logs of the job.
- At SLURM's signal before the time limit (USR2, `hydra.launcher.signal_delay_s` ahead), or at
  SIGTERM (a preemption by `scontrol requeue`, a `scancel`), the run stops at the end of its
  current epoch (a regimes run: its next observation point) with a checkpoint there, and its
  summary says `interrupted`. Then, for the time-limit signal, submitit requeues the job as it
  always does (up to `max_num_timeout` times); after SIGTERM the scheduler has already decided
  (requeued, or cancelled). The requeued job takes over the run's lock and resumes from that
  checkpoint, so nothing is trained twice.

A run of several SLURM tasks (DDP) keeps submitit's own handling: its ranks could not agree on
the epoch to stop at, and it resumes from its last epoch's checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from src.lifecycle.run import Stopped

log = logging.getLogger(__name__)


def job_logs() -> dict[str, Path]:
    """Links to make in the run directory: name -> submitit's log of this job (SLURM only)."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return {}
    import submitit

    paths = submitit.JobEnvironment().paths
    return {"slurm.out": paths.stdout, "slurm.err": paths.stderr}


class StopOnSignal:
    """While installed, the scheduler's signals ask the run to stop at its next record."""

    def __init__(self) -> None:
        self.caught: int | None = None
        self.previous: dict[int, Any] = {}
        self.warning = signal.SIGUSR2

    def install(self) -> StopOnSignal:
        if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
            return self
        import submitit

        if submitit.JobEnvironment().num_tasks > 1:
            return self
        name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
        self.warning = getattr(signal, f"SIG{name}", signal.SIGUSR2)
        for sig in (self.warning, signal.SIGTERM):
            self.previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self.on_signal)
        return self

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.caught is None:
            log.warning("got %s from the scheduler: stopping at the end of this epoch, with a "
                        "checkpoint", signal.Signals(signum).name)
        self.caught = signum

    def check(self, record: dict[str, Any]) -> None:
        """After each record the run writes: stop there if the scheduler asked."""
        if self.caught is not None:
            raise Stopped(signal.Signals(self.caught).name)

    def uninstall(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def after_stop(self) -> NoReturn:
        """The run has stopped and saved: let submitit requeue the job at the time-limit signal
        (it exits, or raises if it may not requeue); after SIGTERM, end the process."""
        caught, previous = self.caught, self.previous.get(self.caught or 0)
        self.uninstall()
        if caught == self.warning and callable(previous):
            previous(caught, None)
        raise SystemExit(128 + (caught or 0))
