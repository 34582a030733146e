"""Hydra callbacks used by tune.py."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)
LATE_GROUPS = ("debug",)  # groups that train.yaml composes after experiment presets


class MakeSqliteFolder(Callback):
    """Create the folder of a sqlite Optuna storage before the sweeper opens it.

    sqlite cannot create missing folders, and the sweeper opens the study before Hydra makes the
    sweep directory.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        storage = config.hydra.sweeper.get("storage")
        prefix = "sqlite:///"
        if storage and str(storage).startswith(prefix):
            Path(str(storage)[len(prefix):]).expanduser().parent.mkdir(parents=True,
                                                                     exist_ok=True)


class WriteBestTrial(Callback):
    """After a tune.py sweep: write the best trial as an experiment preset train.py accepts, and
    print the command that reproduces it.

    The preset is <sweep dir>/experiment/best.yaml; `python train.py --config-dir <sweep dir>
    experiment=best` trains it. It holds the search's fixed overrides too (e.g. model=resnet20).
    """

    def __init__(self) -> None:
        conf = Path(__file__).resolve().parents[1] / "conf"
        self.groups = {p.name for p in conf.iterdir() if p.is_dir()}

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        import optuna

        sweeper = config.hydra.sweeper
        study = optuna.load_study(study_name=sweeper.study_name, storage=sweeper.storage)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            log.warning("no trial of study %s completed: no best.yaml written", study.study_name)
            return
        best = study.best_trial
        swept = set(best.params)
        fixed = [o for o in config.hydra.overrides.task if o.split("=", 1)[0] not in swept]
        defaults, values, extra = [], {}, []
        for override in [*fixed, *(f"{k}={v}" for k, v in best.params.items())]:
            key, value = override.split("=", 1)
            group = key.lstrip("+")
            if group == "experiment":  # the preset builds on the experiment the search used
                defaults.insert(0, value)
            elif group in LATE_GROUPS:  # composed after presets: stays on the command line
                extra.append(override)
            elif group in self.groups:
                defaults.append({f"override /{group}": value})
            else:
                node = values
                *parents, leaf = key.lstrip("+").split(".")
                for part in parents:
                    node = node.setdefault(part, {})
                node[leaf] = yaml.safe_load(value) if isinstance(value, str) else value
        out = Path(config.hydra.sweep.dir) / "experiment" / "best.yaml"
        out.parent.mkdir(parents=True, exist_ok=True)
        header = (f"# @package _global_\n# Best trial #{best.number} of Optuna study "
                  f"'{study.study_name}' ({len(complete)} complete trials): "
                  f"{config.objective} = {best.value}\n")
        body = yaml.safe_dump({"defaults": defaults, **values} if defaults else values,
                              sort_keys=False)
        out.write_text(header + body)
        args = " ".join([*fixed, *(f"{k}={v}" for k, v in best.params.items())])
        log.info("best trial #%d: %s = %s", best.number, config.objective, best.value)
        log.info("wrote %s; reproduce with: python train.py %s   (or: python train.py "
                 "--config-dir %s experiment=best %s)", out, args, out.parent.parent,
                 " ".join(extra))
