"""A trial's reports to its study (src/sweeps/trial.py): every epoch is reported; every epoch
but the last may be pruned (stopping at the last one saves nothing and would turn a finished
trial into a pruned one); a regimes run, whose records have no last epoch, is judged at each."""

from __future__ import annotations

import optuna
import pytest

from src.lifecycle.run import Pruned
from src.sweeps.trial import TrialReporter


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def reporter(tmp_path, last_epoch: int | None) -> TrialReporter:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    study.ask()
    return TrialReporter(url, "s", 0, AlwaysPrune(), "val_acc", last_epoch=last_epoch)


def reported(tmp_path) -> dict[int, float]:
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    return study.trials[0].intermediate_values


def test_the_last_epoch_is_reported_but_never_pruned(tmp_path):
    trial = reporter(tmp_path, last_epoch=3)
    with pytest.raises(Pruned) as stopped:
        trial({"epoch": 2, "val_acc": 0.25})
    assert (stopped.value.step, stopped.value.value) == (2, 0.25)
    trial({"epoch": 3, "val_acc": 0.5})  # the pruner says prune; the trial has ended anyway
    assert reported(tmp_path) == {2: 0.25, 3: 0.5}


@pytest.mark.parametrize("record", [
    {"epoch": 3, "val_acc": 0.5},                 # no last epoch known: every epoch is judged
    {"epoch": 3.0, "step": 120, "val_acc": 0.5},  # a regimes run's point, at its step
], ids=["no_last_epoch", "regimes"])
def test_records_without_a_last_epoch_are_judged(tmp_path, record):
    last_epoch = None if isinstance(record["epoch"], int) else 3
    with pytest.raises(Pruned) as stopped:
        reporter(tmp_path, last_epoch)(record)
    assert stopped.value.step == record.get("step", 3)
    assert reported(tmp_path) == {stopped.value.step: 0.5}
