"""A tune.py trial's job reporting to its study: the objective at every history record (an
epoch; a regimes run's observation points), and the pruner's verdict after each.

The job may run in another process than the sweeper (joblib, submitit): it finds its trial
through the study's storage, from `hydra.sweeper.study_name`, `hydra.sweeper.storage` and the
trial number the sweeper adds to each job (`hydra.sweeper.trial`).
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from src.core.errors import ConfigError

log = logging.getLogger(__name__)

NO_PRUNER = "optuna.pruners.NopPruner"


def storage_url(sweeper: DictConfig, sweep_dir: str) -> str:
    """The study's storage: hydra.sweeper.storage, or the sqlite file in the sweep folder."""
    return sweeper.storage or f"sqlite:///{Path(sweep_dir) / 'optuna.db'}"


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy settings of a study's storage: concurrent sqlite writers wait instead of
    failing; a server connection is checked before use."""
    return ({"connect_args": {"timeout": 60}} if url.startswith("sqlite") else
            {"pool_pre_ping": True})


def history_key(objective: str) -> str:
    """The history record key that tracks `objective` while the run trains: its value now (a
    best-state metric is pruned on the current one)."""
    return objective.replace("best/", "")


def check_prunable(cfg: DictConfig, keys: set[str] | None) -> None:
    """One line if a trial of `cfg` reports nothing a pruner could judge: a prune-and-retrain
    experiment, or an objective no history record holds (keys None: not known before the
    run)."""
    if (cfg.get("pruning") or {}).get("method") is not None:
        raise ConfigError(f"pruning={cfg.pruning.get('name')} experiments report no objective per "
                          f"epoch, so a pruner cannot stop them: use hydra/sweeper/pruner=none")
    objective = str(cfg.objective)
    key = history_key(objective)
    if keys is not None and key not in keys:
        usable = sorted(k for k in keys if k.endswith(("_acc", "_loss", "_err")))
        raise ConfigError(f"objective={objective} has no value per epoch ({key} is not in "
                          f"history.jsonl), so a pruner cannot judge it: tune on one of "
                          f"{', '.join(usable)}, or use hydra/sweeper/pruner=none")


@functools.cache
def study_storage(url: str) -> Any:
    """The study's storage, opened once per process: a worker that stays up for many trials
    (hydra/launcher=workers) connects once, not once a trial."""
    import optuna

    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))


class TrialReporter:
    """Reports `objective` from each history record to trial `number` of the study and raises
    Pruned when the study's pruner says so. The record of epoch `last_epoch` is reported but not
    judged: stopping there would save nothing and turn a finished trial into a pruned one."""

    def __init__(self, url: str, study_name: str, number: int, pruner: Any,
                 objective: str, last_epoch: int | None = None) -> None:
        import optuna

        self.key, self.objective, self.number = history_key(objective), objective, number
        self.last_epoch = last_epoch
        storage = study_storage(url)
        self.study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(study_name), number)
        self.trial = optuna.trial.Trial(self.study, trial_id)

    def __call__(self, record: dict[str, Any]) -> None:
        import optuna

        value = record.get(self.key)
        if value is None or not math.isfinite(value):  # a diverging run ends on its own
            return
        epoch = record.get("epoch")  # a classify run's epoch; a regimes run's optimizer step
        step = epoch if isinstance(epoch, int) else int(record["step"])
        try:
            self.trial.report(float(value), step)
            last = isinstance(epoch, int) and epoch >= (self.last_epoch or math.inf)
            prune = not last and self.trial.should_prune()
        except (optuna.exceptions.OptunaError, RuntimeError, ValueError) as e:
            # the trial was ended meanwhile (failed as dead, then retried): train on, unjudged
            log.warning("trial %d: cannot report to the study (%s); not pruned", self.number, e)
            return
        if prune:
            # here, not at the top: Hydra imports this module (through hydra_plugins) on every
            # start, and the lifecycle brings torch
            from src.lifecycle.run import Pruned

            raise Pruned(step, float(value))


def reporter_for(cfg: DictConfig, hydra_cfg: DictConfig,
                 torchrun: bool) -> TrialReporter | None:
    """The reporter of this job if it is a tune.py trial with a pruner, else None."""
    sweeper = hydra_cfg.get("sweeper") or {}
    pruner_cfg = sweeper.get("pruner")
    if sweeper.get("trial") is None or pruner_cfg is None or pruner_cfg._target_ == NO_PRUNER:
        return None
    if torchrun:  # every rank would have to stop at the same step
        log.warning("trial %d runs under torchrun: the pruner does not stop it", sweeper.trial)
        return None
    return TrialReporter(storage_url(sweeper, hydra_cfg.sweep.dir), sweeper.study_name,
                         int(sweeper.trial), instantiate(pruner_cfg), cfg.objective,
                         last_epoch=int(cfg.epochs) if cfg.get("epochs") is not None else None)
