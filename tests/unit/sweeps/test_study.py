"""The sweeper's pure parts, in process: the search space read from overrides, the points it
checks before a study exists, and override values that parse back to themselves."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
import optuna.distributions as od
import pytest

from src.sweeps.study import (
    OWNER,
    beating_storage,
    fail_dead_trials,
    natural_direction,
    override_value,
    point_at,
    quiet_optuna,
    search_space,
)

ROOT = Path(__file__).resolve().parents[3]


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


ASK_AND_DIE = """
import os, sys, optuna
from src.sweeps.study import beating_storage, quiet_optuna
with quiet_optuna():
    storage = beating_storage(sys.argv[1], heartbeat_interval=60, grace_period=180)
    study = optuna.load_study(study_name="s", storage=storage)
    study.ask()
    study.ask()  # pops the waiting trial
os._exit(0)  # dies without telling, as after kill -9
"""


@pytest.mark.parametrize("retry_dead", [0, 1])
def test_a_trial_whose_process_is_gone_from_this_host_is_failed_at_once(tmp_path, retry_dead):
    """Well inside the 180 s grace period: a dead process of this host is seen at once; a
    trial of another host (the same pid, long dead) waits for its heartbeat to go silent."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    with quiet_optuna():
        retry = (optuna.storages.RetryHeartbeatStaleTrialCallback(retry_dead) if retry_dead
                 else None)
        storage = beating_storage(url, heartbeat_interval=60, grace_period=180,
                                  heartbeat_stale_trial_callback=retry)
        study = optuna.create_study(study_name="s", storage=storage)
        study.enqueue_trial({"x": 1.0})
        subprocess.run([sys.executable, "-c", ASK_AND_DIE, url], cwd=ROOT, check=True)
        elsewhere = study.ask()  # then made to look like another host's trial
        owner = {**study.trials[0].system_attrs[OWNER], "host": "another-host"}
        storage.set_trial_system_attr(elsewhere._trial_id, OWNER, owner)
        mine = study.ask()  # this live process's
        fail_dead_trials(study)
    states = [t.state.name for t in study.trials]
    assert states[:4] == ["FAIL", "FAIL", "RUNNING", "RUNNING"]
    assert {t.number for t in study.trials[2:4]} == {elsewhere.number, mine.number}
    if retry_dead:  # both dead trials queued again, waiting for the next ask
        assert states[4:] == ["WAITING", "WAITING"]
    else:
        assert len(states) == 4
