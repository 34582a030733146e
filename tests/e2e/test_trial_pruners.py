"""tune.py's pruners as they are used: trials stopped early from the sweeper's process, from
joblib workers, submitit jobs and the workers launcher's processes; a rerun that never trains a
pruned trial again; a search killed and restarted; two searches with a pruner on one storage;
figures over a folder with pruned runs; the settings a pruner cannot work with."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import optuna
import pytest
from tensorboard.plugins.hparams.api_pb2 import Status

from tests.helpers.runs import (
    QUIET,
    hparams_of_run,
    run_script,
    snapshot,
    start,
    study_trials,
    summary,
    wait_for,
)

EPOCHS = 6
# learning rates from far too small to good: the small ones are worse than the median at once
PRUNED_SEARCH = [
    "debug=fast", f"epochs={EPOCHS}", "trainer.progress=false", "hydra/sweeper/pruner=median",
    "hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.sampler.seed=0",
    "hydra.sweeper.params={optimizer.lr: 'tag(log, interval(1e-4, 1.0))'}",
]


def search(folder: Path, *extra: str, timeout: float = 300):
    proc = run_script("tune.py", [*PRUNED_SEARCH, f"hydra.sweep.dir={folder}", *extra],
                      timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def check_pruned(folder: Path, trials: list[optuna.trial.FrozenTrial]) -> list[Path]:
    """Every PRUNED trial's run stopped early, says so, kept its history and checkpoint, and
    reported the value the study holds; returns their run directories."""
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned, [t.state.name for t in trials]
    dirs = []
    for trial in pruned:
        run_dir = Path(trial.user_attrs["run_dir"])
        s = summary(run_dir)
        assert s["status"] == "pruned" and 1 <= s["pruned_at"] < EPOCHS
        assert s["pruned_at"] == trial.last_step == s["epochs_completed"]
        assert s["objective"] == trial.value == trial.intermediate_values[trial.last_step]
        history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text()
                   .splitlines()]
        assert [r["epoch"] for r in history] == list(range(1, s["pruned_at"] + 1))
        assert (run_dir / "checkpoint.pt").exists()
        hp, status = hparams_of_run(run_dir)  # TensorBoard: neither a success nor a failure
        assert hp["status"] == "pruned" and status == Status.Value("STATUS_UNKNOWN")
        dirs.append(run_dir)
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert summary(Path(best.user_attrs["run_dir"]))["status"] == "completed"
    return dirs


@pytest.mark.slow
def test_a_pruner_stops_bad_trials_and_a_rerun_never_trains_them(tmp_path):
    proc = search(tmp_path, "hydra.sweeper.n_trials=8")
    trials = study_trials(tmp_path / "optuna.db")
    pruned = check_pruned(tmp_path, trials)
    assert "pruned" in proc.stdout and "completed" in proc.stdout  # the sweep's report
    # the same trial again (train.py -m on its run, or the search proposing its point again):
    # reused as it is, nothing trained or written
    run_dir = pruned[0]
    before = snapshot(run_dir)
    overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
    args = [line[2:] for line in overrides.splitlines() if line.startswith("- ")]
    again = run_script("train.py", [*args, f"hydra.run.dir={run_dir}"])
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already pruned" in again.stdout + again.stderr
    assert snapshot(run_dir) == before
    # drawn as their own mark, counted in the legend, never as finished values
    out = tmp_path / "figures"
    for figure in ("curves", "lr_stability"):
        drawn = run_script("plots.py", [f"runs={tmp_path}", f"figure={figure}",
                                        f"out_dir={out}"])
        assert drawn.returncode == 0, drawn.stderr[-2000:]
    for sidecar in out.glob("*.json"):
        data = json.loads(sidecar.read_text())
        marked = {m["run"] for m in data["marks"] if m["status"] == "pruned"}
        assert marked == {str(d) for d in pruned}, sidecar.name
        if data["figure"] == "lr_stability":  # no pruned run is a value on the curve
            assert not marked & {r for s in data["series"] for r in s["runs"]}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [
    ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "hydra.sweeper.n_jobs=2"],
    ["hydra/launcher=workers", "hydra.launcher.n_jobs=2"],
], ids=["joblib", "submitit_local", "workers"])
def test_trials_in_other_processes_report_and_are_pruned(tmp_path, launcher):
    search(tmp_path, "hydra.sweeper.n_trials=6", *launcher)
    check_pruned(tmp_path, study_trials(tmp_path / "optuna.db"))


@pytest.mark.slow
def test_two_searches_with_a_pruner_on_one_storage(tmp_path):
    procs = [start("tune.py", [*PRUNED_SEARCH, f"hydra.sweep.dir={tmp_path}",
                               "hydra.sweeper.n_trials=5", f"hydra.sweeper.sampler.seed={i}"],
                   tmp_path / f"p{i}.log") for i in range(2)]
    for i, p in enumerate(procs):
        assert p.wait(timeout=300) == 0, (tmp_path / f"p{i}.log").read_text()[-3000:]
    trials = study_trials(tmp_path / "optuna.db")
    assert len(trials) == 10 and {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    check_pruned(tmp_path, trials)


@pytest.mark.slow
def test_a_killed_search_with_a_pruner_keeps_every_result_when_restarted(tmp_path):
    """kill -9 while a trial trains, after trials completed and were pruned; the restart (with
    retry_dead) fails and retries the killed trial at once and never touches the others: every
    completed and pruned trial keeps its state, value and run directory byte for byte."""
    args = [a if not a.startswith("epochs=") else "epochs=25" for a in PRUNED_SEARCH]
    args += [f"hydra.sweep.dir={tmp_path}"]
    db = tmp_path / "optuna.db"
    first = start("tune.py", [*args, "hydra.sweeper.n_trials=12"], tmp_path / "first.log")

    def ended_both_ways_and_training() -> bool:
        try:
            states = [t.state.name for t in study_trials(db)]
        except Exception:  # the study is being created
            return False
        return ("COMPLETE" in states and "PRUNED" in states and states[-1] == "RUNNING"
                and len(list(tmp_path.glob("*/checkpoint.pt"))) > len(states) - 1)

    def training_past_its_first_epoch() -> bool:  # a glob: quick, so the kill lands there
        return any((lock.parent / "checkpoint.pt").exists()
                   and not (lock.parent / "summary.json").exists()
                   for lock in tmp_path.glob("*/run.lock"))

    wait_for(ended_both_ways_and_training, timeout=240,
             what="a completed, a pruned and a training trial")
    # reading the study takes a while, in which that trial may end: wait for one mid-training
    wait_for(training_past_its_first_epoch, timeout=60, what="a trial mid-training")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    before = {t.number: t for t in study_trials(db) if t.state.name in ("COMPLETE", "PRUNED")}
    runs = {n: snapshot(Path(t.user_attrs["run_dir"])) for n, t in before.items()}
    again = run_script("tune.py", [*args, "hydra.sweeper.n_trials=3",
                                   "hydra.sweeper.retry_dead=1"])
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "is gone: FAIL" in again.stdout + again.stderr
    trials = study_trials(db)
    assert not {t.state.name for t in trials} & {"RUNNING", "WAITING"}
    for number, old in before.items():
        now = trials[number]
        assert (now.state, now.value, now.intermediate_values) == (
            old.state, old.value, old.intermediate_values)
        assert snapshot(Path(old.user_attrs["run_dir"])) == runs[number]
    (dead,) = [t for t in trials if t.state.name == "FAIL"]
    (retried,) = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert retried.state.name in ("COMPLETE", "PRUNED") and retried.params == dead.params
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert f"best trial #{best.number} " in again.stdout


@pytest.mark.parametrize(("args", "says"), [
    (["hydra/launcher=stacked"], "hydra/launcher=stacked trains trials without reporting"),
    (["objective=test_acc"], "objective=test_acc has no value per epoch"),
    (["pruning=magnitude"], "pruning=magnitude experiments report no objective per epoch"),
])
def test_what_a_pruner_cannot_judge_is_one_line_and_no_study(tmp_path, args, says):
    proc = run_script("tune.py", [*PRUNED_SEARCH, f"hydra.sweep.dir={tmp_path}", *args])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], proc.stderr
    assert not (tmp_path / "optuna.db").exists()


@pytest.mark.slow
def test_regimes_trials_report_at_their_observation_points(tmp_path):
    """A regimes run reports test_err at each history record, keyed by its optimizer step."""
    proc = run_script("tune.py", [
        "task=regimes", "debug=fast", "objective=test_err", *QUIET, "hydra.sweeper.params=null",
        "task.dt=tag(log, interval(0.01, 100))", "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.n_trials=6",
        "hydra.sweeper.sampler.seed=0", f"hydra.sweep.dir={tmp_path}"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = study_trials(tmp_path / "optuna.db")
    assert "PRUNED" in {t.state.name for t in trials}
    for trial in trials:
        run_dir = Path(trial.user_attrs["run_dir"])
        history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text()
                   .splitlines()]
        assert trial.intermediate_values == {r["step"]: r["test_err"] for r in history}
        if trial.state.name == "PRUNED":
            assert summary(run_dir)["pruned_at"] == history[-1]["step"] == trial.last_step
