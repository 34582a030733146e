"""hydra/launcher=workers: a sweep's jobs on n_jobs worker processes of this machine that stay up
for the whole sweep. Each job's config is composed in the sweeper's process (src/sweeps/compose.py:
a grid or a search composes each kind of job once) and handed to a free worker, which runs it as
Hydra's run_job does (its own run directory, Hydra record and log).

Against hydra/launcher=joblib, which starts a joblib call and composes the job's config in the
worker (~0.4 s a job on a 2-core machine), a job starts ~0.1 s after the last one's end, so
tune.py's asynchronous trials keep the workers busy (benchmarks/tune.py).

    python train.py -m hydra/launcher=workers seed=0,1,2,3 optimizer.lr=0.01,0.1
    python tune.py hydra/launcher=workers hydra.launcher.n_jobs=2

A job that fails fails alone, as with any launcher. A worker that dies (killed, out of memory)
fails its own job with one line and is replaced; the other workers' jobs go on. Ctrl-C reaches
the running jobs, which record themselves as interrupted, as under joblib.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import cloudpickle
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from src.core.errors import ConfigError, one_line, report_user_errors
from src.sweeps.compose import Composer, job_return

log = logging.getLogger(__name__)

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
DIED = "its worker process died (killed, or out of memory): run the sweep again to resume it"


class Worker:
    """One worker process and the pipe to it (spawned: the sweeper's threads are not copied)."""

    def __init__(self, state: bytes, threads: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        # not a daemon: a job may start processes of its own (DataLoader workers, torchrun)
        self.process = ctx.Process(target=worker_main, args=(child, state, threads),
                                   name="trainkit-worker")
        self.process.start()
        child.close()

    def run(self, config: DictConfig) -> JobReturn:
        """The job's return; EOFError or OSError if the worker died under it."""
        self.conn.send(config)
        return self.conn.recv()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
        self.conn.close()


class WorkersLauncher(Launcher):
    """n_jobs: worker processes (-1: one per CPU core); each gets its share of the cores for
    torch's threads (at least one), as joblib gives its workers."""

    composes_up_front = True  # a job whose config cannot be composed fails before any trains

    def __init__(self, n_jobs: int = -1) -> None:
        self.n_jobs = n_jobs
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.composer: Composer | None = None
        self.idle: queue.Queue[Worker] | None = None
        self.started: list[Worker] = []
        self.state = b""
        self.lock = threading.Lock()  # tune.py's lanes launch from several threads
        atexit.register(self.close)

    @classmethod
    def check_settings(cls, settings: DictConfig) -> None:
        """hydra.launcher.n_jobs, before the sweep writes anything (src/cli/entry.py)."""
        cls(settings.get("n_jobs")).workers()

    @report_user_errors
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.workers()  # a bad n_jobs is one line before the sweep writes anything
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        self.composer = None

    def workers(self) -> int:
        n = self.n_jobs
        if not isinstance(n, int) or isinstance(n, bool) or n == 0 or n < -1:
            raise ConfigError(f"hydra.launcher.n_jobs={n} is not a number of worker processes: "
                              f"use a positive integer, or -1 for one per CPU core")
        return n if n > 0 else (os.cpu_count() or 1)

    def start(self) -> queue.Queue[Worker]:
        """The idle workers, started at the first launch."""
        if self.idle is None:
            n = self.workers()
            # Hydra's global state (its config store, resolvers) and the task, pickled once;
            # cloudpickle: resolvers are often lambdas
            self.state = cloudpickle.dumps((self.hydra_context, self.task_function,
                                            Singleton.get_state()))
            self.idle = queue.Queue()
            for _ in range(n):
                self.idle.put(self.new_worker())
        return self.idle

    def new_worker(self) -> Worker:
        worker = Worker(self.state, max(1, (os.cpu_count() or 1) // self.workers()))
        self.started.append(worker)
        return worker

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        with self.lock:
            if self.composer is None:
                self.composer = Composer(self.hydra_context.config_loader, self.config)
            configs = [self.composer.job_config(list(o), initial_job_idx + n)
                       for n, o in enumerate(job_overrides)]
            idle = self.start()
        for config in configs:
            log.info("\t#%d : %s", config.hydra.job.num,
                     " ".join(filter_overrides(list(config.hydra.overrides.task))))
        if len(configs) == 1:  # tune.py's lanes: one job per call, from the lane's own thread
            return [self.run(idle, configs[0])]
        with ThreadPoolExecutor(min(len(configs), self.workers()),
                                thread_name_prefix="job") as jobs:
            return list(jobs.map(lambda c: self.run(idle, c), configs))

    def run(self, idle: queue.Queue[Worker], config: DictConfig) -> JobReturn:
        """Run one job on the next free worker; a worker that died is replaced."""
        worker = idle.get()
        try:
            ret = worker.run(config)
        except (EOFError, OSError):
            log.error("job #%d: %s", config.hydra.job.num, DIED)
            worker.stop()
            with self.lock:
                self.started.remove(worker)
                worker = self.new_worker()
            ret = failed(config, RuntimeError(DIED))
        idle.put(worker)
        return ret

    def close(self) -> None:
        """Stop the workers (at the end of the sweeper's process)."""
        for worker in self.started:
            worker.stop()
        self.started = []


def failed(config: DictConfig, e: BaseException) -> JobReturn:
    """The return of a job that raised `e` outside its task (its worker died, or its return
    could not be sent back)."""
    return job_return(config, config, e, JobStatus.FAILED)


# -- in the worker process --------------------------------------------------------------------

_busy = threading.Event()


def _on_sigint(signum: int, frame: Any) -> None:
    """Ctrl-C reaches a running job (it records itself as interrupted); an idle worker has
    nothing to record, and the sweeper ends it."""
    if _busy.is_set():
        raise KeyboardInterrupt


def worker_main(conn: Connection, state: bytes, threads: int) -> None:
    """Run the jobs the sweeper sends, one at a time, until it sends None or goes away."""
    signal.signal(signal.SIGINT, _on_sigint)
    for name in THREAD_VARIABLES:
        os.environ[name] = str(min(threads, int(os.environ.get(name, threads))))
    import torch  # here, once: its threads are set before any job runs

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    # `state` is what this worker's own sweeper pickled for it a moment ago (Process arguments
    # and the pipe pickle too): no file, nothing someone else wrote
    context, task, singleton_state = pickle.loads(state)
    Singleton.set_state(singleton_state)
    setup_globals()
    while True:
        try:
            config = conn.recv()
        except EOFError:  # the sweeper is gone
            return
        if config is None:
            return
        HydraConfig.instance().set_config(config)
        _busy.set()
        try:
            ret = run_job(hydra_context=context, task_function=task, config=config,
                          job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        except KeyboardInterrupt as e:  # the run recorded itself as interrupted
            conn.send(failed(config, e))
            return
        finally:
            _busy.clear()
        try:
            conn.send(ret)
        except Exception as e:  # a return that cannot be pickled: the job's result is on disk
            conn.send(failed(config, RuntimeError(f"its return could not be sent back to the "
                                                  f"sweeper ({one_line(e)})")))
