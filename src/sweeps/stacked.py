"""hydra/launcher=stacked: the jobs of a sweep that differ only in values that change no shapes and
no code (seeds, learning rates and other optimizer hyperparameters, schedules, EMA decays, the
regimes study's dt, temperature and alpha) train as stacked runs, many small models in one
vectorized job whose places refill as runs end (src/tasks/stacked/).

    python train.py -m hydra/launcher=stacked seed=0,1,2 optimizer.lr=0.01,0.1
    python tune.py hydra/launcher=stacked          (each batch of trials stacks)

Every job stays an ordinary run: its own run directory, lock, Hydra record, history, checkpoint
and summary, which plots.py, eval.py and a plain train.py (resuming it alone) read as any other.
A job no stack can train (another optimizer, gradient compression, a pruning experiment) runs
as an ordinary run after the stacks, with one line saying why; a job with a bad value fails
alone, with one line, as in any sweep. Each stack adds a line to <sweep dir>/stacks.jsonl: its
jobs, slots, wall time, step (eager or compiled) and slot occupancy.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, configure_log, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict, read_write

from src.core.errors import UserError, one_line
from src.core.files import append_jsonl, remove_if_empty
from src.lifecycle.lock import LOCK_WAIT_ENV
from src.lifecycle.record import JobRecord, quiet_runs
from src.sweeps.compose import Composer, job_return
from src.sweeps.report import JobResult, sweep_failure

log = logging.getLogger(__name__)

STACKS = "stacks.jsonl"  # in the sweep folder: one line per stack (jobs, slots, time, occupancy)


class StackedLauncher(Launcher):
    """slots: places per stack (an integer, or auto: what half the free memory holds);
    n_jobs: how many trials tune.py hands over at once (train.py -m hands over its whole grid);
    compile: torch.compile the regimes step (true, false, or auto: for long runs)."""

    # it composes every job's config before it trains any, so a sweeper need not check them first
    composes_up_front = True

    def __init__(self, slots: int | str = "auto", n_jobs: int = 16,
                 compile: bool | str = "auto") -> None:
        self.slots, self.n_jobs, self.compile = slots, n_jobs, compile
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.composer: Composer | None = None

    @staticmethod
    def check_settings(settings: DictConfig) -> None:
        """hydra.launcher.*, in one line each, before the sweep writes anything
        (src/cli/entry.py calls it for every launcher that declares it)."""
        from src.tasks.stacked.group import check_compile, check_slots

        check_slots(settings.get("slots"))
        n_jobs = settings.get("n_jobs")
        if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs < 1:
            raise UserError(f"hydra.launcher.n_jobs={n_jobs}: use an integer >= 1 (trials "
                            f"tune.py hands over at once)")
        check_compile(settings.get("compile"))

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        self.composer = None

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        from src.optim.stacked import NotStackable
        from src.tasks import check_config
        from src.tasks.stacked.group import key, kind

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        configs = [self.job_config(list(o), initial_job_idx + n)
                   for n, o in enumerate(job_overrides)]
        tasks = [task_config(c) for c in configs]
        returns: list[JobReturn | None] = [None] * len(configs)
        groups: dict[str, list[int]] = defaultdict(list)
        alone: list[tuple[int, str]] = []
        for n, (config, task_cfg) in enumerate(zip(configs, tasks, strict=True)):
            try:
                check_config(task_cfg)
                groups[f"{kind(task_cfg)}:{key(task_cfg)}"].append(n)
            except NotStackable as e:
                alone.append((n, str(e)))
            except UserError as e:  # a bad value fails this job alone
                returns[n] = self.failed(config, task_cfg, e)
        for members in list(groups.values()):
            if len(members) == 1:
                alone.append((members[0], "no other job of the sweep shares its stack"))
        stacks = [m for m in groups.values() if len(m) > 1]
        log.info("stacked: %d job(s): %d in %d stack(s), %d alone", len(configs),
                 sum(len(m) for m in stacks), len(stacks), len(alone))
        for members in stacks:
            try:
                done = self.run_stack([configs[n] for n in members],
                                      [tasks[n] for n in members])
            except NotStackable as e:  # found once built (a network that vmap cannot run)
                alone.extend((n, str(e)) for n in members)
                continue
            for n, result in zip(members, done, strict=True):
                returns[n] = result
        for n, reason in sorted(alone):
            log.info("stacked: job #%d runs alone: %s", initial_job_idx + n, reason)
            returns[n] = run_job(hydra_context=self.hydra_context,
                                 task_function=self.task_function, config=configs[n],
                                 job_dir_key="hydra.sweep.dir",
                                 job_subdir_key="hydra.sweep.subdir")
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [r for r in returns if r is not None]

    def job_config(self, overrides: list[str], index: int) -> DictConfig:
        assert self.hydra_context is not None and self.config is not None
        if self.composer is None:
            self.composer = Composer(self.hydra_context.config_loader, self.config)
        return self.composer.job_config(overrides, index)

    def run_stack(self, configs: list[DictConfig], tasks: list[DictConfig]) -> list[JobReturn]:
        """Train the jobs of one stack (their whole configs and their task configs)."""
        from src.tasks.stacked.group import run_group
        from src.tasks.stacked.slots import StackJob

        jobs = []
        for config, task_cfg in zip(configs, tasks, strict=True):
            run_dir = Path(config.hydra.runtime.output_dir)
            # a stack never changes its jobs' configs, so the record may share them
            jobs.append(StackJob(task_cfg, run_dir, JobRecord(run_dir, task_cfg, config.hydra),
                                 f"job #{config.hydra.job.num}"))
        assert self.config is not None
        configure_log(self.config.hydra.job_logging, self.config.hydra.verbose)
        # tune.py sets the wait in its jobs' environment (hydra.job.env_set)
        wait = configs[0].hydra.job.env_set.get(LOCK_WAIT_ENV, os.environ.get(LOCK_WAIT_ENV, 0))
        with quiet_runs():
            report = run_group(jobs, self.slots, float(wait), self.compile)
        occupancy = report.occupancy
        waited = (f" ({100 * occupancy.share(queued=True):.0f}% while jobs waited for a slot)"
                  if occupancy.offered_queued else "")
        log.info("stacked: %d run(s) in %d slot(s), %.0f s; slots %.0f%% full%s", len(jobs),
                 report.slots, report.wall_s, 100 * occupancy.share(), waited)
        append_jsonl(Path(str(self.config.hydra.sweep.dir)) / STACKS, {
            "jobs": len(jobs), "slots": report.slots, "wall_s": report.wall_s,
            "step": report.step, "occupancy": occupancy.share(),
            "occupancy_while_queued": occupancy.share(queued=True) if waited else None,
            "finished_at": time.time()})
        out = []
        for n, (config, job) in enumerate(zip(configs, jobs, strict=True)):
            outcome = report.outcomes[n]
            if isinstance(outcome, BaseException):
                result = sweep_failure(outcome, job.run_dir, job.record)
                job.record.close()
                remove_if_empty(job.run_dir)
            else:
                summary = outcome.summary
                result = JobResult(summary.get("status", "completed"), outcome.objective,
                                   str(job.run_dir))
            out.append(job_return(config, job.cfg, result))
        return out

    def failed(self, config: DictConfig, task_cfg: DictConfig, e: Exception) -> JobReturn:
        run_dir = Path(config.hydra.runtime.output_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        record = JobRecord(run_dir, task_cfg, config.hydra)
        log.error("job in %s failed: %s", run_dir, one_line(e))
        result = sweep_failure(e, run_dir, record)
        record.close()
        return job_return(config, task_cfg, result)


def task_config(config: DictConfig) -> DictConfig:
    """The job's config without its `hydra` node (what the task function receives)."""
    task_cfg = copy.deepcopy(config)
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    return task_cfg
