"""The sweeper's pure parts, in process: the search space read from overrides, the points it
checks before a study exists, and override values that parse back to themselves."""

from __future__ import annotations

import time

import optuna
import optuna.distributions as od
import pytest

from src.sweeps.study import (
    beating_storage,
    natural_direction,
    override_value,
    point_at,
    quiet_optuna,
    search_space,
)


def test_the_search_space_and_the_fixed_overrides_are_told_apart():
    space, fixed = search_space(["optimizer.lr=tag(log,interval(1e-3,1))", "seed=3",
                                 "batch_size=choice(32,64)"])
    assert fixed == {"seed": "3"}
    assert space["optimizer.lr"] == od.FloatDistribution(1e-3, 1.0, log=True)
    assert space["batch_size"] == od.CategoricalDistribution([32, 64])


@pytest.mark.parametrize(("dist", "points"), [
    (od.CategoricalDistribution(["a", "b", "c"]), ["a", "b", "c"]),
    (od.FloatDistribution(1e-4, 1.0, log=True), [1e-4, 1e-2, 1.0]),
    (od.FloatDistribution(0.0, 1.0), [0.0, 0.5, 1.0]),
    (od.IntDistribution(1, 9, step=2), [1, 5, 9]),
])
def test_the_checked_points_are_the_lowest_middle_and_highest(dist, points):
    got = [point_at(dist, w) for w in (0.0, 0.5, 1.0)]
    assert got == pytest.approx(points)
    assert all(dist._contains(dist.to_internal_repr(p)) for p in got)


def test_values_and_directions():
    assert override_value(None) == "null" and override_value(0.5) == "0.5"
    assert natural_direction("ema_0.99/val_acc") == "maximize"
    assert natural_direction("val_loss") == "minimize"


def test_a_trial_whose_process_died_before_its_first_beat_is_failed(tmp_path):
    """Killed between asking and starting its heartbeat thread: the storage itself gave the
    trial its first beat, so the trial goes stale and a later process fails it; a waiting
    (enqueued) trial gets its beat when it is popped."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    with quiet_optuna():
        storage = beating_storage(url, heartbeat_interval=1, grace_period=1)
        study = optuna.create_study(study_name="s", storage=storage)
        study.enqueue_trial({"x": 1.0})
        popped, asked = study.ask(), study.ask()  # no Heartbeat, as if killed right here
        assert [popped.params.get("x"), asked.number] == [None, 1]
        time.sleep(2.5)
        later = optuna.load_study(study_name="s", storage=beating_storage(
            url, heartbeat_interval=1, grace_period=1))
        optuna.storages.fail_stale_trials(later)
    assert [t.state for t in later.trials] == [optuna.trial.TrialState.FAIL] * 2
