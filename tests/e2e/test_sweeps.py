"""The sweep layer as it fails in real use: killed and restarted, two processes at once, a bad job
next to good ones, a rejected command pointed at a finished run."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import optuna
import pytest

from src.lifecycle.lock import LOCK
from tests.helpers.runs import (
    QUIET,
    run_script,
    snapshot,
    start,
    study_trials,
    summary,
    train,
    wait_for,
)

# -- the run-directory lock ------------------------------------------------------------------






LONG = ["debug=fast", "epochs=60", "device=cpu", *QUIET]


@pytest.mark.slow
def test_a_second_process_on_a_run_dir_is_refused_and_a_killed_ones_lock_is_taken_over(
        tmp_path):
    run_dir = tmp_path / "run"
    first = start("train.py", [*LONG, f"hydra.run.dir={run_dir}"], tmp_path / "first.log")
    wait_for(lambda: (run_dir / "history.jsonl").exists(), what="the first run to start")
    # Frozen while it holds the lock: on a loaded machine it could otherwise finish its 60 short
    # epochs before the second process gets as far as the lock.
    os.killpg(first.pid, signal.SIGSTOP)
    second = train(run_dir, *LONG, check=False)
    assert second.returncode == 2, second.stderr[-2000:]
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"in use by pid {first.pid}" in lines[0], second.stderr
    os.killpg(first.pid, signal.SIGKILL)  # the holder dies without releasing its lock
    first.wait()
    assert (run_dir / LOCK).exists() and not (run_dir / "summary.json").exists()
    train(run_dir, *LONG)  # the same command resumes: the dead process's lock is stale
    records = [json.loads(x) for x in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 61))  # none duplicated, none lost
    assert summary(run_dir)["status"] == "completed" and not (run_dir / LOCK).exists()


@pytest.mark.parametrize("args", [
    ["optimizer.lr=-1"],                 # a component rejects it
    ["batch_size=0"],                    # our checks reject it
    ["epochs=3"],                        # another config in the same directory
    [],                                  # the same command: the finished run is reused
], ids=["bad-component-value", "bad-setting", "other-config", "same-command"])
def test_a_command_pointed_at_a_finished_run_leaves_it_byte_identical(tmp_path, args):
    train(tmp_path, "debug=fast", "device=cpu")
    before = snapshot(tmp_path)
    proc = train(tmp_path, "debug=fast", "device=cpu", *args, check=False)
    assert proc.returncode == (0 if not args else 2), proc.stderr[-2000:]
    assert snapshot(tmp_path) == before  # .hydra/ and the log included


# -- train.py -m -------------------------------------------------------------------------------


@pytest.mark.smoke  # make test-fast runs it
def test_a_bad_job_and_a_diverging_job_do_not_end_the_sweep(tmp_path):
    proc = run_script("train.py", ["-m", "debug=fast", "optimizer=sgd", "optimizer.lr=0.1,1e6,-1",
                                   *QUIET, f"hydra.sweep.dir={tmp_path}"])
    assert proc.returncode == 1, proc.stderr[-3000:]  # a job failed: non-zero, after all three
    status = {d.name: summary(d) for d in tmp_path.iterdir() if d.is_dir()}
    by_lr = {name.split("optimizer.lr=")[1].split(",")[0]: s for name, s in status.items()}
    assert by_lr["0.1"]["status"] == "completed"
    assert by_lr["1000000.0"]["status"] == "diverged"
    assert by_lr["-1"]["status"] == "failed"
    assert "Invalid learning rate: -1" in by_lr["-1"]["error"]
    assert "\n" not in by_lr["-1"]["error"]
    out = proc.stdout
    assert "sweep: 3 job(s): 1 completed, 1 diverged, 1 failed" in out
    assert "optimizer.lr=-1" in out.split("sweep: 3 job(s)")[1]  # the failed job's directory
    # Run again: the finished runs are reused, the failed one fails again with the same line.
    again = run_script("train.py", ["-m", "debug=fast", "optimizer=sgd",
                                    "optimizer.lr=0.1,1e6,-1", *QUIET,
                                    f"hydra.sweep.dir={tmp_path}"])
    assert again.returncode == 1 and "1 completed, 1 diverged, 1 failed" in again.stdout


# -- tune.py ---------------------------------------------------------------------------------


def tune_args(folder: Path, *extra: str) -> list[str]:
    return ["debug=fast", *QUIET, f"hydra.sweep.dir={folder}", *extra]


@pytest.mark.slow
def test_a_killed_search_restarts_without_leftovers_or_replayed_points(tmp_path):
    """kill -9 mid-trial, then at once a restart with retry_dead=1: the killed trial is FAIL
    at once (its process is gone from this host; the heartbeat's grace period is the default
    180 s), queued again, and its run resumes from its checkpoint; no point is proposed twice."""
    args = tune_args(tmp_path, "epochs=40", "hydra.sweeper.sampler.seed=0")
    db = tmp_path / "optuna.db"
    first = start("tune.py", [*args, "hydra.sweeper.n_trials=5"], tmp_path / "first.log")

    def one_done_one_running_with_a_checkpoint() -> bool:
        if not db.exists():
            return False
        try:
            states = [t.state for t in study_trials(db)]
        except (ValueError, Exception):  # the study is being created
            return False
        done = states.count(optuna.trial.TrialState.COMPLETE)
        # more checkpoints than completed trials: the running one has written its own
        return (done >= 1 and states[-1] == optuna.trial.TrialState.RUNNING
                and len(list(tmp_path.glob("*/checkpoint.pt"))) > done)

    wait_for(one_done_one_running_with_a_checkpoint,
             what="a trial to complete and the next to checkpoint")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed = len(study_trials(db))
    proc = run_script("tune.py", [*args, "hydra.sweeper.n_trials=3",
                                  "hydra.sweeper.retry_dead=1"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "is gone: FAIL" in proc.stdout + proc.stderr
    trials = study_trials(db)
    states = [t.state.name for t in trials]
    assert "RUNNING" not in states and "WAITING" not in states
    assert states.count("FAIL") == 1 and states.count("COMPLETE") == killed - 1 + 3
    (dead,) = [t for t in trials if t.state.name == "FAIL"]
    (retried,) = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert retried.state.name == "COMPLETE" and retried.params == dead.params
    logs = "".join(p.read_text() for p in Path(retried.user_attrs["run_dir"]).glob("*.log"))
    assert "resuming" in logs  # from the killed trial's checkpoint
    points = [tuple(sorted(t.params.items())) for t in trials if t is not dead]
    assert len(set(points)) == len(points)  # the restart proposed new points


@pytest.mark.slow
def test_two_searches_at_once_on_one_storage_run_distinct_complete_trials(tmp_path):
    args = tune_args(tmp_path, "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=0")
    procs = [start("tune.py", args, tmp_path / f"p{i}.log") for i in range(2)]
    for i, p in enumerate(procs):
        assert p.wait(timeout=300) == 0, (tmp_path / f"p{i}.log").read_text()[-3000:]
    trials = study_trials(tmp_path / "optuna.db")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    points = {tuple(sorted(t.params.items())) for t in trials}
    assert len(points) == 6
    runs = {t.user_attrs["run_dir"] for t in trials}
    assert len(runs) == 6 and all(summary(Path(r))["status"] == "completed" for r in runs)


def test_searches_that_differ_only_in_model_are_two_studies(tmp_path):
    for model in ("mlp", "mnist_cnn"):
        proc = run_script("tune.py", [*tune_args(tmp_path / model, "hydra.sweeper.n_trials=1"),
                                      f"model={model}"])
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    names = [optuna.get_all_study_summaries(f"sqlite:///{tmp_path / m / 'optuna.db'}")[0]
             .study_name for m in ("mlp", "mnist_cnn")]
    assert names[0].startswith("digits-mlp-val_acc-")
    assert names[1].startswith("digits-mnist_cnn-val_acc-")
    assert names[0].rsplit("-", 1)[1] != names[1].rsplit("-", 1)[1]


def test_a_failing_trial_is_fail_and_the_search_goes_on(tmp_path):
    proc = run_script("tune.py", tune_args(tmp_path, "hydra.sweeper.n_trials=4",
                                           "hydra.sweeper.sampler.seed=1",
                                           "batch_size=choice(0,32)"))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = study_trials(tmp_path / "optuna.db")
    assert len(trials) == 4 and "RUNNING" not in {t.state.name for t in trials}
    for t in trials:
        if t.params["batch_size"] == 0:
            assert t.state.name == "FAIL" and "batch_size=0" in t.user_attrs["error"]
        else:
            assert t.state.name == "COMPLETE"
    assert "failed" in proc.stdout.split("sweep: 4 job(s)")[1]


def test_the_printed_command_reproduces_the_reported_best_score(tmp_path):
    proc = run_script("tune.py", tune_args(tmp_path, "hydra.sweeper.n_trials=2",
                                           "optimizer=sgd"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if "reproduce with: python train.py" in x)
    command = line.split("reproduce with: python train.py ")[1].split()
    reported = float(next(x for x in proc.stdout.splitlines() if x.startswith("best trial"))
                     .split(" = ")[1].split()[0])
    run_dir = tmp_path / "again"
    train(run_dir, *command)
    assert summary(run_dir)["objective"] == reported
    best = optuna.load_study(study_name=None, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert best.best_value == reported


@pytest.mark.slow
def test_parallel_trials_with_the_joblib_launcher_really_overlap(tmp_path):
    proc = run_script("tune.py", tune_args(tmp_path, "epochs=30", "hydra.sweeper.n_trials=2",
                                           "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = study_trials(tmp_path / "optuna.db")
    spans = sorted((s["started_at"], s["finished_at"])
                   for s in (summary(Path(t.user_attrs["run_dir"])) for t in trials))
    assert len(spans) == 2 and spans[1][0] < spans[0][1]  # the second began before the first ended
    pids = {summary(Path(t.user_attrs["run_dir"]))["pid"] for t in trials}
    assert len(pids) == 2 and os.getpid() not in pids


def overtakes(trials: list[optuna.trial.FrozenTrial]) -> list[tuple[float, float, dict]]:
    """Each moment a trial ended while a longer one (started before) still had over 2 seconds to
    run, and trials were left to start: (seconds until the next start, seconds the longer one
    still ran, the spans). The next start comes first when free places are filled at once; it
    comes after the longer one's end when batches wait for their slowest trial."""
    spans = {t.number: (s["started_at"], s["finished_at"])
             for t in trials for s in [summary(Path(t.user_attrs["run_dir"]))]}
    cases = []
    for _, end in spans.values():
        running = [e for s, e in spans.values() if s < end and e > end + 2.0]
        later = [s for s, _ in spans.values() if s > end]
        if running and later:
            cases.append((min(later) - end, min(running) - end, spans))
    return cases


@pytest.mark.slow
def test_asynchronous_trials_never_wait_for_the_slowest_one(tmp_path):
    """Trials of 1 and 250 epochs, two in flight: when a short one ends, the next starts at
    once, while the long one still runs (asynchronous, the default); in batches
    (asynchronous=false) it waits for the long one of its batch. Judged by the order of the
    starts and ends, not by durations: a loaded machine stretches both alike."""
    for asynchronous in ("true", "false"):
        folder = tmp_path / asynchronous
        proc = run_script("tune.py", tune_args(
            folder, "hydra.sweeper.params=null", "epochs=choice(1,250)",
            "optimizer.lr=interval(0.01,0.1)", "batch_size=32",
            "hydra.sweeper.n_trials=6", "hydra.sweeper.sampler.seed=1",
            "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            f"hydra.sweeper.asynchronous={asynchronous}"))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        trials = study_trials(folder / "optuna.db")
        assert [t.state.name for t in trials] == ["COMPLETE"] * 6, proc.stdout[-3000:]
        assert sorted({t.params["epochs"] for t in trials}) == [1, 250]  # unequal lengths
        cases = overtakes(trials)
        assert cases, (asynchronous, [(t.number, t.params) for t in trials])
        for wait, left, spans in cases:
            if asynchronous == "true":
                assert wait < left, (wait, left, spans)  # filled while the long one ran
            else:
                assert wait >= left, (wait, left, spans)  # the batch waited for its slowest
