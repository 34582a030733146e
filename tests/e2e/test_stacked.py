"""train.py -m hydra/launcher=stacked and tune.py with it, as they fail in use: a job no stack
trains and a bad job beside the stacks, a sweep killed and started again, two sweeps over one
folder; each run read by eval.py, plots.py and plain train.py as any other run."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.helpers.compare import assert_same_run
from tests.helpers.runs import QUIET, run_script, start, study_trials, summary, wait_for

STACKED = ["hydra/launcher=stacked", "device=cpu", "trainer.progress=false"]


def run_dirs(sweep: Path) -> list[Path]:
    return sorted(p.parent for p in sweep.glob("*/summary.json"))


@pytest.mark.smoke  # make test-fast runs it
def test_a_stacked_sweep_is_ordinary_runs_and_says_which_jobs_run_alone(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_script("train.py", ["-m", *STACKED, "debug=fast", "seed=0,1",
                                   "optimizer=momentum,momo", "optimizer.lr=0.05,-1",
                                   f"hydra.sweep.dir={sweep}"])
    assert proc.returncode == 1, proc.stderr[-3000:]  # the bad jobs failed, the rest ran
    out = proc.stdout + proc.stderr
    assert "stacked: 8 job(s): 4 in 1 stack(s), 4 alone" in out
    assert out.count("runs alone: src.optim.momo.Momo has no stacked step") == 4
    assert "sweep: 8 job(s): 4 completed, 4 failed" in out
    failed = [line for line in out.splitlines() if line.startswith("  failed")]
    assert len(failed) == 4 and all("optimizer.lr=-1" in line and "rejects its settings" in line
                                    for line in failed)
    assert out.count("job #1 failed") == 1  # one line each
    stacked_runs = [d for d in run_dirs(sweep) if "momo" not in d.name
                    and summary(d)["status"] == "completed"]
    assert len(stacked_runs) == 2
    for run in stacked_runs:  # the whole run-directory contract
        for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "history.jsonl",
                     "steps.jsonl", "checkpoint.pt", "train.log", "stack.json"):
            assert (run / name).exists(), name
        assert any((run / "tb").iterdir())
        log = (run / "train.log").read_text()
        assert "completed: val_acc" in log and "stacked:" not in log  # its own lines only
    evaluated = run_script("eval.py", [f"checkpoint={stacked_runs[0]}", "device=cpu"])
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    got = json.loads((stacked_runs[0] / "eval.json").read_text())["metrics"]
    assert got["test_acc"] == pytest.approx(summary(stacked_runs[0])["metrics"]["test_acc"])
    drawn = run_script("plots.py", [f"runs={sweep}", "figure=curves",
                                     f"out_dir={tmp_path / 'fig'}"])
    assert drawn.returncode == 0, drawn.stderr[-2000:]
    assert list((tmp_path / "fig").glob("*.png"))
    # plain train.py pointed at a stacked run finds it finished and reuses it
    overrides = (stacked_runs[0] / ".hydra/overrides.yaml").read_text().split("\n")
    again = run_script("train.py", [o[2:] for o in overrides if o.startswith("- ")] + [
        "device=cpu", *QUIET, f"hydra.run.dir={stacked_runs[0]}"])
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already completed" in again.stdout + again.stderr


LONGER = ["debug=fast", "epochs=6", "seed=0,1,2", "optimizer.lr=0.05"]


@pytest.mark.slow
def test_a_killed_stacked_sweep_started_again_ends_bit_identical(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    args = ["-m", *STACKED, *LONGER, "hydra.launcher.slots=2"]
    done = run_script("train.py", [*args, f"hydra.sweep.dir={whole}"])
    assert done.returncode == 0, done.stderr[-3000:]
    proc = start("train.py", [*args, f"hydra.sweep.dir={killed}"], tmp_path / "killed.log")
    wait_for(lambda: len(list(killed.glob("*/checkpoint.pt"))) >= 2, what="checkpoints")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list(killed.glob("*/summary.json"))  # killed mid-run: nothing finished
    again = run_script("train.py", [*args, f"hydra.sweep.dir={killed}"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming" not in again.stdout  # a run's own lines stay in its log
    logs = [(d / "train.log").read_text() for d in run_dirs(killed)]
    assert sum("resuming" in log for log in logs) >= 2
    for got, want in zip(run_dirs(killed), run_dirs(whole), strict=True):
        assert got.name == want.name
        assert_same_run(got, want)  # bit for bit


@pytest.mark.slow
def test_two_stacked_sweeps_over_one_folder_train_each_run_once(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *STACKED, *LONGER, f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "TRAINKIT_LOCK_WAIT_S": "600"}  # wait for the other's runs, then reuse
    first = start("train.py", args, tmp_path / "first.log", env=env)
    second = run_script("train.py", args, env=env)
    assert first.wait(timeout=600) == 0, (tmp_path / "first.log").read_text()[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    runs = run_dirs(sweep)
    assert len(runs) == 3
    for run in runs:
        epochs = [json.loads(x)["epoch"] for x in (run / "history.jsonl").open()]
        assert epochs == list(range(1, 7))  # trained once: none repeated, none lost
        assert (run / "train.log").read_text().count("completed: val_acc") == 1
    outputs = (tmp_path / "first.log").read_text() + second.stdout + second.stderr
    assert outputs.count("(objective ") == 3  # each run trained by one of the two
    assert outputs.count("(reused)") == 3  # and found finished by the other


@pytest.mark.slow
def test_tune_stacks_each_batch_of_trials(tmp_path):
    db = tmp_path / "study.db"
    proc = run_script("tune.py", ["hydra/launcher=stacked", "debug=fast", "device=cpu",
                                  "~hydra.sweeper.params.batch_size",  # one shape: one stack
                                  "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=4",
                                  f"hydra.sweeper.storage=sqlite:///{db}",
                                  f"hydra.sweep.dir={tmp_path / 'runs'}", *QUIET])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stacked: 4 job(s): 4 in 1 stack(s), 0 alone" in proc.stdout + proc.stderr
    trials = study_trials(db)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert len({t.user_attrs["run_dir"] for t in trials}) == 4


@pytest.mark.slow
def test_networks_by_name_stack_and_one_that_cannot_runs_alone_and_says_why(tmp_path):
    """A timm and a torchvision network, 2 seeds each, as two stacks; timm's stochastic depth
    (a torch.rand inside the forward pass) cannot stack: its jobs run alone, one line each."""
    sweep = tmp_path / "sweep"
    common = [*STACKED, "debug=fast", "dataset=fake", "seed=0,1", "logger=none"]
    proc = run_script("train.py", ["-m", *common, "model=timm,torchvision",
                                   "++model.name=resnet18", f"hydra.sweep.dir={sweep}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "stacked: 4 job(s): 4 in 2 stack(s), 0 alone" in out
    assert "runs alone" not in out
    runs = run_dirs(sweep)
    assert len(runs) == 4 and all(summary(r)["status"] == "completed" for r in runs)
    assert all((r / "stack.json").exists() for r in runs)
    drop = tmp_path / "drop_path"
    proc = run_script("train.py", ["-m", *common, "model=timm", "model.name=resnet10t",
                                   "+model.kwargs.drop_path_rate=0.1",
                                   f"hydra.sweep.dir={drop}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert out.count("runs alone: model.name=resnet10t cannot run in a stack (RuntimeError: "
                     "vmap: called random operation") == 2
    runs = run_dirs(drop)
    assert len(runs) == 2 and not any((r / "stack.json").exists() for r in runs)
    assert all(summary(r)["status"] == "completed" for r in runs)
