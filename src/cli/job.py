"""One job of train.py or tune.py: a single run, or one job of a sweep.

Around the runner, a job holds the run-directory lock (one process per run directory), writes
Hydra's record only once the run really starts (see run_log.JobRecord), and decides what a
failure becomes:
- a single run (train.py without -m): a user error is one `error:` line and exit status 2; the
  empty directory Hydra made for it is removed and an existing run is left byte-identical;
- a sweep job (train.py -m, tune.py trials): nothing ends the sweep but Ctrl-C. A bad setting or
  a crash is recorded (summary.json with status `failed` and its one-line reason, in a directory
  that held no run before) and returned as a JobResult, which the sweeper counts and reports.
"""

from __future__ import annotations

import copy
import logging
import os
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from src.cli import outputs
from src.cli.batch import StopOnSignal, job_logs
from src.core.errors import UserError, as_user_error, debugging, fail, one_line
from src.core.files import SUMMARY, read_json, remove_if_empty
from src.lifecycle.lock import LOCK_WAIT_ENV, RunDirBusy, RunLock, batch_job
from src.lifecycle.record import JobRecord
from src.lifecycle.run import Stopped
from src.sweeps.report import JobResult, record_failure
from src.sweeps.trial import reporter_for
from src.tasks import task_run

log = logging.getLogger(__name__)

current_run_dir: Path | None = None  # the job this process is running (for Ctrl-C's message)


def train_task(cfg: DictConfig) -> float | JobResult:
    """The task of train.py and of every tune.py trial: train one run (or, with a pruning method,
    a prune-and-retrain experiment) in Hydra's output directory and return its objective."""
    from src.engine import distributed  # torch: not before Hydra has parsed the command line

    global current_run_dir
    hydra_cfg = HydraConfig.get()
    run_dir = current_run_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    distributed.adopt_batch_tasks()
    main = distributed.process_rank() == 0  # under torchrun rank 0 alone locks, writes, prints
    if not main:
        logging.getLogger().setLevel(logging.WARNING)
    jobs = hydra_cfg.sweeper.get("jobs") if in_sweep else None
    if jobs:  # in the log as well as on the terminal: how far the sweep has come
        log.info("job %d of %d: %s", hydra_cfg.job.num + 1, jobs, run_dir)
    lock: AbstractContextManager = (RunLock(run_dir, float(os.environ.get(LOCK_WAIT_ENV, 0)))
                                    if main else nullcontext())
    record = None
    job = batch_job()
    # a SLURM job stops at the scheduler's signal with a checkpoint (src/cli/batch.py)
    stop = StopOnSignal().install()
    try:
        try:
            # a tune.py trial with a pruner reports each epoch to its study (src/sweeps/trial.py)
            trial = (reporter_for(cfg, hydra_cfg, distributed.launched_by_torchrun())
                     if main and in_sweep else None)

            def report(entry: dict[str, Any]) -> None:
                if trial is not None:
                    trial(entry)
                stop.check(entry)

            record = (JobRecord(run_dir, copy.deepcopy(cfg), hydra_cfg, report, job_logs())
                      if main else None)
            with lock:
                try:
                    objective = task_run(cfg)(cfg, run_dir, record)
                except Exception as e:
                    if in_sweep and record is not None:
                        record_failure(run_dir, record, one_line(e))
                    raise
        except RunDirBusy as e:
            return refuse("busy", e, run_dir, in_sweep, job)
        except UserError as e:
            return refuse("failed", e, run_dir, in_sweep, job)
        except OSError as e:  # a folder it cannot write, a full disk: the user's to fix
            if e.errno is None:
                raise
            return refuse("failed", as_user_error(e), run_dir, in_sweep, job)
        except Exception as e:
            if not in_sweep:
                raise
            log.exception("job in %s failed", run_dir)  # the traceback goes to the job's log
            return JobResult("failed", None, str(run_dir), one_line(e), job)
    except Stopped:
        stop.after_stop()  # submitit requeues the job, or the process ends (finally: below)
    finally:
        stop.uninstall()
        if record is not None:
            record.close()
        remove_if_empty(run_dir)
    if not in_sweep:
        return objective
    status, objective_name = run_status(run_dir)
    return JobResult(status, objective, str(run_dir), job=job, objective_name=objective_name)


def refuse(status: str, e: Exception, run_dir: Path, in_sweep: bool,
           job: str | None = None) -> JobResult:
    """A single run exits with one line and status 2; a sweep job returns its failure."""
    if not in_sweep:
        remove_if_empty(run_dir, outputs.existing_folder)
        if debugging():
            raise e
        fail(str(e))
    log.error("job in %s %s: %s", run_dir, status, one_line(e))
    return JobResult(status, None, str(run_dir), one_line(e), job)


def run_status(run_dir: Path) -> tuple[str, str | None]:
    """(status, the name of the objective it returned) from the run's summary.json."""
    path = run_dir / SUMMARY
    done = read_json(path) if path.exists() else {}
    return done.get("status", "completed"), done.get("objective_name")
