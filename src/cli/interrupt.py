"""Ctrl-C before a run has started: one line and exit 130, whatever was loading.

Each entry point installs this first, before its heavy imports. Until a job has started (Hydra
and the libraries are still loading, the command line is being checked), a Ctrl-C has nothing
to record: it prints one line and ends the process. Once a job runs, it raises KeyboardInterrupt
as usual, and the runner records the run as interrupted (run_entry_point prints the line).
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

BEFORE_RUN = ("interrupted before the run started: nothing was written; run the same command "
              "again to start it")


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    job = sys.modules.get("src.cli.job")
    if job is not None and getattr(job, "current_run_dir", None) is not None:
        raise KeyboardInterrupt
    sys.stderr.write(BEFORE_RUN + "\n")
    sys.stderr.flush()
    os._exit(130)  # nothing to clean up: no run directory has been touched


def install() -> None:
    """Route Ctrl-C through _on_sigint (main thread only, as signal handlers must be)."""
    signal.signal(signal.SIGINT, _on_sigint)
