"""tune.py's sweeper: an Optuna study that survives restarts, parallel processes and bad trials.

Configured like Hydra's Optuna sweeper (`hydra.sweeper.params`, `n_trials`, `n_jobs`, `storage`,
`study_name`, `direction`, `sampler`), with what that plugin lacks:
- identity: without `study_name`, the study is named from what defines the search (dataset,
  model and objective, readably, plus a digest of the fixed overrides, the search space, the
  objective and the direction), so different searches never share a study;
- dead trials: a trial whose tune.py process is gone from this host is FAIL as soon as another
  tune.py process looks (before each batch); one of another host once its heartbeat has been
  silent for `grace_period` seconds (`retry_dead=N` queues such a trial again, up to N times;
  it then resumes from its run directory's checkpoint);
- new points after a restart and across processes: the sampler is seeded per trial from
  (`sampler.seed`, trial number), so a restarted or second process never replays the proposals
  of the first, while one process on a fresh study stays reproducible;
- parallel trials: `n_jobs` trials (default: the launcher's n_jobs) are in flight at all times;
  when one ends the next is asked for and launched at once (`asynchronous=false`, and the
  stacked launcher: batches of `n_jobs`, each waiting for the slowest);
- pruners (`hydra/sweeper/pruner=`): each trial reports its objective at every history record
  and stops, as status `pruned`, when the pruner says so (src/sweeps/trial.py);
- failed jobs: a trial whose job failed (bad setting, crash) is FAIL with its reason as user
  attribute `error`; a diverged run is COMPLETE with the worst objective (0 for an accuracy, +inf
  for a loss). The search goes on either way; the end reports every trial's outcome;
- the best trial of this study alone becomes `<sweep dir>/experiment/best.yaml` plus the
  train.py command that reproduces its score.
`n_trials` is per process: N processes on one storage run N x n_trials trials.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from src.core.errors import ConfigError, report_user_errors
from src.core.files import GROUPS
from src.core.keys import neutral
from src.lifecycle.lock import gone_from_this_host, this_owner
from src.sweeps.report import new_report
from src.sweeps.trial import check_prunable, engine_kwargs, storage_url
from src.tasks import check_config, history_keys

log = logging.getLogger(__name__)

DIRECTIONS = ("maximize", "minimize")
LATE_GROUPS = ("debug",)  # groups composed after experiment presets: stay on the command line


def natural_direction(objective: str) -> str:
    """maximize for accuracies and scores, minimize for losses, errors and the rest."""
    return "maximize" if re.search(r"(acc|score|potential)[^/]*$", objective) else "minimize"


def distribution(override: Override) -> Any:
    """The Optuna distribution of one sweep override of Hydra's grammar."""
    import optuna.distributions as od

    key = override.get_key_element()
    value = override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        return od.CategoricalDistribution(list(override.sweep_iterator(Transformer.encode)))
    if isinstance(value, RangeSweep):
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            # Hydra's range excludes its stop, Optuna's high is inclusive
            return od.IntDistribution(int(value.start), int(value.stop) - int(value.step),
                                      step=int(value.step))
        return od.FloatDistribution(value.start, value.stop - value.step, step=value.step)
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if log_scale and value.start <= 0:
            raise ConfigError(f"{key}: a log-scale interval needs low > 0, got "
                              f"interval({value.start}, {value.end}): raise the lower end, or "
                              f"drop tag(log, ...)")
        if value.start >= value.end:
            raise ConfigError(f"{key}: interval({value.start}, {value.end}) is empty: give "
                              f"low < high")
        if isinstance(value.start, int) and isinstance(value.end, int):
            return od.IntDistribution(value.start, value.end, log=log_scale)
        return od.FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ConfigError(f"{key}: {override.input_line} is not a search dimension: use choice(...), "
                      f"range(...) or [tag(log, ...)] interval(low, high)")


def search_space(arguments: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(distributions of the swept keys, fixed overrides 'key' -> 'value' as typed)."""
    space, fixed = {}, {}
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        if override.is_sweep_override():
            space[key] = distribution(override)
            fixed.pop(key, None)
        else:
            fixed[key] = override.get_value_element_as_str()
            space.pop(key, None)
    return space, fixed


def describe(dist: Any) -> str:
    """A distribution in words of our own (stable across Optuna versions, unlike its repr)."""
    import optuna.distributions as od

    if isinstance(dist, od.CategoricalDistribution):
        return "choice(" + ",".join(repr(c) for c in dist.choices) + ")"
    kind = "int" if isinstance(dist, od.IntDistribution) else "float"
    return f"{kind}({dist.low!r},{dist.high!r},step={dist.step!r},log={dist.log})"


def study_identity(config: DictConfig, space: dict[str, Any], fixed: dict[str, str],
                   objective: str, direction: str) -> str:
    """'<dataset>-<model>-<objective>-<digest>': the digest covers everything that defines the
    search, so two searches share a study only if they search the same thing."""
    defining = {"fixed": sorted(f"{k}={v}" for k, v in fixed.items() if not neutral(k)),
                "space": sorted(f"{k}={describe(d)}" for k, d in space.items()),
                "objective": objective, "direction": direction}
    digest = hashlib.sha256(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:8]
    model = config.hydra.runtime.choices.get("model", "model")
    readable = "-".join(str(part) for part in (config.dataset.name, model, objective))
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', readable)}-{digest}"


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna warns that heartbeats are experimental and "supposed to be used with
    Study.optimize"; tune.py records them itself, on purpose."""
    import optuna

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        yield


def trial_seed(seed: int, number: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{number}".encode()).digest()[:4], "little")


def per_trial_sampler(factory: Callable[[int | None], Any], seed: int | None) -> Any:
    """A sampler rebuilt for every trial, seeded from (seed, trial number): proposals depend on
    the study's history and the trial's number, never on how many this process made before."""
    from optuna.samplers import BaseSampler

    class PerTrialSampler(BaseSampler):
        def __init__(self) -> None:
            self.inner = factory(seed)

        def before_trial(self, study: Any, trial: Any) -> None:
            self.inner = factory(None if seed is None else trial_seed(seed, trial.number))
            self.inner.before_trial(study, trial)

        def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
            return self.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, space: Any) -> Any:
            return self.inner.sample_relative(study, trial, space)

        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            return self.inner.sample_independent(study, trial, name, dist)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self.inner.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self.inner.reseed_rng()

    return PerTrialSampler()


OWNER = "trainkit:owner"  # a trial's system attribute: the tune.py process that runs it


def beating_storage(url: str, **kwargs: Any) -> Any:
    """An RDBStorage whose trials say who runs them and beat from their first moment.

    A trial asked here is created, in the same transaction, with the system attribute `OWNER`
    (this process's host, pid and start time: `fail_dead_trials` fails it at once when that
    process is gone from this host) and, right after, its first heartbeat (Optuna fails only
    trials whose heartbeat went stale, so a process killed before its heartbeat thread first
    beat would leave a RUNNING trial that no other host ever fails). A waiting trial (enqueued,
    or a dead one queued again) gets both when it is popped.
    """
    import optuna

    class BeatingStorage(optuna.storages.RDBStorage):
        # Optuna's cache in front of an RDBStorage creates trials through this method
        def _create_new_trial(self, study_id: int, template_trial: Any = None) -> Any:
            if template_trial is None:  # study.ask: a running trial, owned by this process
                template_trial = optuna.trial.FrozenTrial(
                    number=-1, state=optuna.trial.TrialState.RUNNING, value=None,
                    datetime_start=datetime.now(), datetime_complete=None, params={},
                    distributions={}, user_attrs={}, system_attrs={OWNER: this_owner()},
                    intermediate_values={}, trial_id=-1)
            trial = super()._create_new_trial(study_id, template_trial)
            if (self.heartbeat_interval is not None
                    and trial.state == optuna.trial.TrialState.RUNNING):
                self.record_heartbeat(trial._trial_id)
            return trial

        def set_trial_state_values(self, trial_id: int, state: Any,
                                   values: Any = None) -> bool:
            changed = super().set_trial_state_values(trial_id, state, values)
            if changed and state == optuna.trial.TrialState.RUNNING:
                self.set_trial_system_attr(trial_id, OWNER, this_owner())
                if self.heartbeat_interval is not None:
                    self.record_heartbeat(trial_id)
            return changed

    return BeatingStorage(url, **kwargs)


def fail_dead_trials(study: Any) -> None:
    """FAIL the running trials of processes that are gone: at once for a process of this host
    (its owner's pid no longer runs), after the heartbeat's grace period for another host's.
    Dead trials are queued again as `retry_dead` says, either way."""
    import optuna

    storage = study._storage
    with quiet_optuna():
        optuna.storages.fail_stale_trials(study)  # other hosts: silent for grace_period
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = trial.system_attrs.get(OWNER)
        if not isinstance(owner, dict) or not gone_from_this_host(owner):
            continue
        try:
            if storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL):
                failed.append(trial._trial_id)
                log.info("trial %d: its process (pid %s on %s) is gone: FAIL", trial.number,
                         owner.get("pid"), owner.get("host"))
        except optuna.exceptions.UpdateFinishedTrialError:  # another process failed it first
            pass
    retry = storage.get_heartbeat_stale_trial_callback()
    if retry is not None:
        for trial_id in failed:
            retry(study, copy.deepcopy(storage.get_trial(trial_id)))


class Heartbeat:
    """Records a heartbeat for each running trial every `interval` seconds (Optuna does this
    only inside study.optimize; tune.py asks and tells)."""

    def __init__(self, storage: Any, trial_ids: list[int], interval: int | None) -> None:
        self.storage, self.trial_ids, self.interval = storage, trial_ids, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="trial-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        if self.interval:
            self._record()
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()

    def _record(self) -> None:
        for trial_id in self.trial_ids:
            self.storage.record_heartbeat(trial_id)

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self._record()
            except Exception as e:  # a storage hiccup: the next beat tries again
                log.warning("heartbeat failed: %s", e)


def override_value(value: Any) -> str:
    """A parameter value as a Hydra override value that parses back to the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)


class Trials:
    """Asks, launches and tells the trials of one tune.py process.

    run_batches: `n` trials at a time, the next batch once the slowest has ended (a stacked
    launcher trains a batch as stacks). run_lanes: `lanes` trials in flight at all times; when
    one ends, the next is asked for and launched at once (each lane hands the launcher one job;
    asks and tells take turns, so TPE's constant liar sees every trial in flight).
    """

    def __init__(self, study: Any, storage: Any, space: dict[str, Any], fixed_args: list[str],
                 launcher: Any, report: Any, objective: str, heartbeat: int,
                 retry_dead: int = 0) -> None:
        import optuna

        self.study, self.storage, self.space, self.fixed_args = study, storage, space, fixed_args
        self.launcher, self.report, self.objective = launcher, report, objective
        self.heartbeat = heartbeat
        # a trial whose job ended without a result (a SLURM job cancelled or killed) is dead
        # too: queued again like a trial whose heartbeat stopped
        self.retry = (optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retry_dead)
                      if retry_dead else None)
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self.lock = threading.Lock()  # the sampler, the report and the job numbers are shared
        self.to_go, self.index, self.stop = 0, 0, threading.Event()
        self.n_trials = self.told = 0  # this process's budget, and the trials it has told

    def ask(self, n: int) -> tuple[list[Any], int]:
        """n new trials (fewer if the budget is spent) and the first one's job index."""
        with self.lock:
            n = min(n, self.to_go) if not self.stop.is_set() else 0
            if not n:
                return [], self.index
            fail_dead_trials(self.study)
            with quiet_optuna():
                trials = [self.study.ask(fixed_distributions=self.space) for _ in range(n)]
            index, self.index, self.to_go = self.index, self.index + n, self.to_go - n
            return trials, index

    def launch(self, trials: list[Any], index: int) -> None:
        jobs = [[*self.fixed_args, *(f"{k}={override_value(v)}" for k, v in t.params.items()),
                 f"hydra.sweeper.trial={t.number}"] for t in trials]
        ids = [self.storage.get_trial_id_from_study_id_trial_number(self.study_id, t.number)
               for t in trials]
        with Heartbeat(self.storage, ids, self.heartbeat):
            returns = self.launcher.launch(jobs, initial_job_idx=index)
        with self.lock:
            for trial, result in zip(trials, self.report.add(returns), strict=True):
                self.tell(trial, result)

    def tell(self, trial: Any, result: Any) -> None:
        import optuna

        trial.set_user_attr("run_dir", result.run_dir)
        if result.status in ("completed", "diverged") and result.objective is not None:
            self.study.tell(trial, result.objective)
        elif result.status == "pruned":  # its value: the last one it reported
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            trial.set_user_attr("error", result.error or result.status)
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            if result.ended_as is not None and self.retry is not None:
                trial_id = self.storage.get_trial_id_from_study_id_trial_number(
                    self.study_id, trial.number)
                self.retry(self.study, self.storage.get_trial(trial_id))
                log.info("trial %d's job ended %s: queued again (hydra.sweeper.retry_dead)",
                         trial.number, result.ended_as)
        self.told += 1
        log.info("trial %d %s (%d of %d here): %s = %s (%s)", trial.number, result.status,
                 self.told, self.n_trials, self.objective, result.objective, result.run_dir)

    def run_batches(self, n_trials: int, batch: int) -> None:
        self.to_go = self.n_trials = n_trials
        while True:
            trials, index = self.ask(batch)
            if not trials:
                return
            self.launch(trials, index)

    def run_lanes(self, n_trials: int, lanes: int) -> None:
        self.to_go = self.n_trials = n_trials

        def lane() -> None:
            while True:
                trials, index = self.ask(1)
                if not trials:
                    return
                self.launch(trials, index)

        with ThreadPoolExecutor(lanes, thread_name_prefix="trial-lane") as pool:
            running = [pool.submit(lane) for _ in range(lanes)]
            try:
                while not all(f.done() for f in running):
                    wait(running, timeout=0.5)  # short waits: Ctrl-C reaches this thread
            except BaseException:
                self.stop.set()  # no new trial; the running ones end (Ctrl-C reached them too)
                raise
            for f in running:
                f.result()  # a lane's error, raised here


class StudySweeper(Sweeper):
    def __init__(self, sampler: functools.partial, direction: str | None, storage: str | None,
                 study_name: str | None, n_trials: int, n_jobs: int | None, params: DictConfig,
                 heartbeat_interval: int = 60, grace_period: int = 180,
                 retry_dead: int = 0, pruner: Any = None, trial: int | None = None,
                 asynchronous: bool = True) -> None:
        """pruner: an optuna pruner (conf/hydra/sweeper/pruner/); trial: set in each trial's job
        only (the number its reports go to, src/sweeps/trial.py)."""
        self.sampler, self.direction = sampler, direction  # storage: read by url(), as jobs do
        self.study_name, self.n_trials, self.n_jobs = study_name, n_trials, n_jobs
        self.params = params or {}
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.retry_dead, self.pruner, self.asynchronous = retry_dead, pruner, asynchronous
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)

    # -- set-up of the study ------------------------------------------------------------------

    def batch_size(self) -> int:
        n = self.n_jobs
        if n is None:  # as many as the launcher runs at once
            n = OmegaConf.select(self.config, "hydra.launcher.n_jobs", default=1)
        n = int(n)
        return n if n > 0 else (os.cpu_count() or 1)

    def url(self) -> str:
        """hydra.sweeper.storage, or a sqlite file in the study's folder."""
        assert self.config is not None
        return storage_url(self.config.hydra.sweeper, self.config.hydra.sweep.dir)

    def open_storage(self, name: str) -> Any:
        import optuna
        from sqlalchemy.exc import IntegrityError

        url = self.url()
        if url.startswith("sqlite:///"):
            folder = Path(url[len("sqlite:///"):]).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigError(f"hydra.sweeper.storage={url}: cannot create {folder} "
                                  f"({e.strerror}): point the storage at a writable folder"
                                  ) from None
        retry = (optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=self.retry_dead)
                 if self.retry_dead else None)
        attempt = 0
        while True:
            try:
                with quiet_optuna():
                    return beating_storage(
                        url, engine_kwargs=engine_kwargs(url),
                        heartbeat_interval=self.heartbeat_interval or None,
                        grace_period=self.grace_period, heartbeat_stale_trial_callback=retry)
            except Exception as e:
                # Two processes creating the tables of a new database at once: one of them
                # loses the race (a unique constraint, or "table ... already exists"); the tables
                # exist a moment later.
                reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0][:200]
                racing = isinstance(e, IntegrityError) or any(
                    words in reason for words in ("already exists", "database is locked"))
                if attempt < 2 and racing:
                    attempt += 1
                    time.sleep(attempt)
                    continue
                raise ConfigError(f"hydra.sweeper.storage={url} cannot be opened ({reason}): "
                                  f"use sqlite:///<writable path>/optuna.db or a reachable "
                                  f"postgresql://user@host/db") from None

    def make_sampler(self, space: dict[str, Any]) -> Any:
        """The configured sampler (a partial: conf/hydra/sweeper/sampler/*.yaml), seeded per
        trial."""
        import optuna

        factory = self.sampler
        seed = factory.keywords.get("seed")
        if factory.func is optuna.samplers.GridSampler:
            factory = functools.partial(factory, search_space={
                k: grid_values(k, d) for k, d in space.items()})
        return per_trial_sampler(lambda s: factory(seed=s), seed)

    def check_trials(self, fixed_args: list[str], space: dict[str, Any]) -> None:
        """The task's checks on trial configs, before the study exists: a mistake every trial
        would make (an objective no run produces) is one line, and no trial trains and no study
        is written. Tried at the space's lowest, middle and highest points: where one passes,
        the search runs, and trials that fail record why."""
        errors = []
        for where in (0.0, 0.5, 1.0):
            point = [f"{k}={override_value(point_at(d, where))}" for k, d in space.items()]
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config,
                                                                     [*fixed_args, *point])
            try:
                with read_write(cfg), open_dict(cfg):
                    check_config(cfg)
                    if self.pruning:
                        check_prunable(cfg, history_keys(cfg))
                return
            except ConfigError as e:
                errors.append(e)
        raise errors[0]

    @property
    def pruning(self) -> bool:
        import optuna

        return self.pruner is not None and not isinstance(self.pruner, optuna.pruners.NopPruner)

    # -- the search ---------------------------------------------------------------------------

    @report_user_errors
    def sweep(self, arguments: list[str]) -> None:
        import optuna

        assert self.config is not None
        objective = str(self.config.objective)
        direction = self.direction or natural_direction(objective)
        if direction not in DIRECTIONS:
            raise ConfigError(f"hydra.sweeper.direction={direction} is not a direction: use "
                              f"maximize or minimize (or null: from the objective's name)")
        for key, low in (("n_trials", 1), ("heartbeat_interval", 0), ("grace_period", 1),
                         ("retry_dead", 0)):
            value = getattr(self, key)
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"hydra.sweeper.{key}={value} is out of range: use an integer "
                                  f">= {low}")
        params = [f"{k}={v}" for k, v in self.params.items()]
        space, fixed = search_space([*params, *arguments])
        if not space:
            raise ConfigError("the search space is empty: give hydra.sweeper.params.<key>=... "
                              "or a sweep override such as optimizer.lr='interval(1e-3,1)'")
        name = self.study_name or study_identity(self.config, space, fixed, objective, direction)
        with read_write(self.config), open_dict(self.config):
            self.config.hydra.sweeper.study_name = name  # the sweep dir interpolates it
        fixed_args = [f"{k}={v}" for k, v in fixed.items()]
        stacked = str(self.config.hydra.launcher._target_).endswith("StackedLauncher")
        if self.pruning and stacked:
            raise ConfigError("hydra/launcher=stacked trains trials without reporting each epoch "
                              "to a pruner: use hydra/sweeper/pruner=none with it, or the basic, "
                              "joblib or submitit launcher")
        self.check_trials(fixed_args, space)
        storage = self.open_storage(name)
        sampler = self.make_sampler(space)
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                    pruner=self.pruner, direction=direction, load_if_exists=True)
        if study.direction.name.lower() != direction:
            raise ConfigError(f"study {name} in {storage.url} was created to "
                              f"{study.direction.name.lower()}: use another "
                              f"hydra.sweeper.study_name")
        log.info("study %s (%s %s) in %s: %d trial(s) so far, %d to run here", name, direction,
                 objective, storage.url, len(study.trials), self.n_trials)
        report = new_report(objective, direction == "maximize")
        trials = Trials(study, storage, space, [*fixed_args, f"hydra.sweeper.study_name={name}"],
                        self.launcher, report, objective, self.heartbeat_interval,
                        self.retry_dead)
        lanes = self.batch_size()
        if self.asynchronous and lanes > 1 and not stacked:
            trials.run_lanes(self.n_trials, lanes)
        else:  # a stacked launcher stacks each batch: it gets the whole batch at once
            trials.run_batches(self.n_trials, lanes)
        fail_dead_trials(study)
        report.print()
        self.write_best(study, fixed, objective)

    def write_best(self, study: Any, fixed: dict[str, str], objective: str) -> None:
        """best.yaml (a preset train.py accepts) and the command that reproduces the score."""
        import optuna

        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            print(f"study {study.study_name}: no trial completed, no best.yaml written")
            return
        best = study.best_trial
        overrides = {**{k: v for k, v in fixed.items() if k not in best.params},
                     **{k: override_value(v) for k, v in best.params.items()}}
        groups = set(GROUPS)
        defaults, values, extra = [], {}, []
        for key, value in overrides.items():
            group = key.lstrip("+")
            if group.split(".")[0] == "logger":  # where the numbers went, not what they are
                continue
            if group == "experiment":  # the preset builds on the experiment the search used
                defaults.insert(0, value)
            elif group in LATE_GROUPS:
                extra.append(f"{key}={value}")
            elif group in groups:
                defaults.append({f"override /{group}": value})
            else:
                node = values
                *parents, leaf = group.split(".")
                for part in parents:
                    node = node.setdefault(part, {})
                node[leaf] = yaml.safe_load(value)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        out = sweep_dir / "experiment" / "best.yaml"
        out.parent.mkdir(parents=True, exist_ok=True)
        header = (f"# @package _global_\n# Best trial #{best.number} of Optuna study "
                  f"'{study.study_name}' ({len(complete)} complete trials): "
                  f"{objective} = {best.value}\n")
        body = yaml.safe_dump({"defaults": defaults, **values} if defaults else values,
                              sort_keys=False)
        tmp = out.with_name(f"best.yaml.{os.getpid()}.tmp")  # several processes may finish
        tmp.write_text(header + body)
        os.replace(tmp, out)
        command = " ".join(f"{k}={v}" for k, v in overrides.items())
        print(f"best trial #{best.number} of study {study.study_name}: {objective} = "
              f"{best.value} (run {best.user_attrs.get('run_dir', '?')})")
        print(f"wrote {out}; reproduce with: python train.py {command}")
        if extra:  # debug composes after presets: the searched values must win over it
            extra += [f"{k}={override_value(v)}" for k, v in best.params.items()]
        print(f"  or: python train.py --config-dir {sweep_dir} experiment=best "
              f"{' '.join(extra)}".rstrip())
        print(f"watch the study: optuna-dashboard {self.url()}")


def point_at(dist: Any, where: float) -> Any:
    """The point of a distribution at `where` (0: its first choice or lowest value, 1: its last
    or highest; a log scale is halved geometrically)."""
    if hasattr(dist, "choices"):
        return dist.choices[round(where * (len(dist.choices) - 1))]
    low, high = dist.low, dist.high
    value = (low * (high / low) ** where if getattr(dist, "log", False)
             else low + (high - low) * where)
    step = getattr(dist, "step", None)
    if step:
        value = low + round((value - low) / step) * step
    return round(value) if isinstance(low, int) and isinstance(high, int) else value


def grid_values(key: str, dist: Any) -> list[Any]:
    """The points of a discrete distribution, for Optuna's GridSampler."""
    import optuna.distributions as od

    if isinstance(dist, od.CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, od.IntDistribution) and not dist.log:
        return list(range(dist.low, dist.high + 1, dist.step))
    if isinstance(dist, od.FloatDistribution) and dist.step is not None:
        count = round((dist.high - dist.low) / dist.step) + 1
        return [dist.low + i * dist.step for i in range(count)]
    raise ConfigError(f"{key}: the grid sampler needs a discrete dimension (choice or range), "
                      f"got an interval: use choice(...) or range(...), or another sampler")
