"""hydra/launcher=submitit_slurm: Hydra's submitit launcher, with every job's outcome its own.

Hydra's launcher collects a sweep's jobs with `job.results()`, so one job that ends without a
result (cancelled, killed at its time limit, out of memory, a node failure) raises for the whole
sweep and the other jobs' results are lost. Here such a job fails alone: its result says which
SLURM job it was, the state sacct gives it, and the last line of its error log; the others are
reported as usual. tune.py retries such a trial (`hydra.sweeper.retry_dead`), which resumes its
run from the checkpoint it left (src/cli/batch.py stops a signalled run at an epoch's end).

Settings are Hydra's (conf/hydra/launcher/submitit_slurm.yaml lists them).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    SlurmLauncher as HydraSlurmLauncher,
)
from omegaconf import OmegaConf

from src.core.errors import one_line
from src.sweeps.compose import Composer, job_return
from src.sweeps.report import JobResult

log = logging.getLogger(__name__)



def hide_schema_warning() -> None:
    """conf/hydra/launcher/submitit_slurm.yaml has the name of the plugin's own config, so Hydra
    validates it against the plugin's schema (which it passes) and warns that such matching is
    deprecated, three times per command and in every job's log: not the user's concern."""
    warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/submitit_slurm' is "
                            "validated against ConfigStore schema with the same name")


hide_schema_warning()  # in a job, which imports this module to unpickle its launcher

EXECUTOR_KEYS = ("submitit_folder", "max_num_timeout")  # set on the executor, not per job


class SlurmLauncher(HydraSlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        assert self.config is not None
        executor = submitit.AutoExecutor(cluster="slurm", folder=self.params["submitit_folder"],
                                         slurm_max_num_timeout=self.params["max_num_timeout"])
        shared = set(OmegaConf.structured(BaseQueueConf).keys())  # named without "slurm_"
        executor.update_parameters(**{k if k in shared else f"slurm_{k}": v
                                      for k, v in self.params.items() if k not in EXECUTOR_KEYS})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        log.info("submitit 'slurm' sweep output dir: %s", sweep_dir)
        state = Singleton.get_state()
        jobs_args = []
        for n, overrides in enumerate(job_overrides):
            index = initial_job_idx + n
            log.info("\t#%d : %s", index, " ".join(filter_overrides(overrides)))
            jobs_args.append((list(overrides), "hydra.sweep.dir", index, f"job_id_for_{index}",
                              state))
        jobs = executor.map_array(self, *zip(*jobs_args, strict=True))
        return [self.collect(job, args[0], args[2])
                for job, args in zip(jobs, jobs_args, strict=True)]

    def collect(self, job: Any, overrides: list[str], index: int) -> JobReturn:
        """The job's return; a job that ended without one fails alone, saying why."""
        try:
            return job.results()[0]
        except Exception as e:
            state = str(job.state).split()[0] if job.state else "UNKNOWN"
            reason = (f"SLURM job {job.job_id} ended {state} without a result; its log "
                      f"{job.paths.stderr} ends: {last_line(job.paths.stderr) or one_line(e)}")
            log.error("job #%d: %s", index, reason)
            return self.failed(overrides, index, JobResult("failed", None, "?", reason,
                                                           str(job.job_id), state))

    def failed(self, overrides: list[str], index: int, result: JobResult) -> JobReturn:
        """A JobReturn for `result`, with the job's config (composed here, for its run dir);
        the sweeper reads the failure from the JobResult."""
        assert self.hydra_context is not None and self.config is not None
        config = Composer(self.hydra_context.config_loader, self.config).job_config(overrides,
                                                                                    index)
        run_dir = str(config.hydra.runtime.output_dir)
        return job_return(config, config, JobResult(result.status, None, run_dir, result.error,
                                                    result.job, result.ended_as))


def last_line(path: Path) -> str | None:
    """The last non-empty line of a log file (None if it has none)."""
    try:
        lines = [line.strip() for line in Path(path).read_text(errors="replace").splitlines()]
    except OSError:
        return None
    lines = [line for line in lines if line and not line.startswith("srun: ")]
    return lines[-1][:300] if lines else None

