"""The experiment trackers read back with their own clients: MLflow's MlflowClient on the SQLite
store, W&B's offline files (its protobuf records), TensorBoard's event reader and the CSV files.

One tracker run per run whatever happens: killed (kill -9, Ctrl-C) and resumed, under torchrun,
reused when finished; a sweep's runs share an experiment (MLflow) and a group (W&B); a tracker
that cannot start leaves a killed run as it was, ready to resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from src.analysis.runs import find_runs
from tests.helpers.postgres import free_port
from tests.helpers.runs import ROOT, run_script, snapshot, start, summary, wait_for
from tests.helpers.trackers import (
    csv_series,
    mlflow_runs,
    mlflow_series,
    tensorboard_series,
    wandb_run,
)

pytestmark = pytest.mark.e2e
ALL = "logger=[tensorboard,csv,mlflow,wandb]"
# about 0.5 s an epoch on 2 cores: time enough to be killed after the first one
SLOW_EPOCHS = ["debug=fast", "epochs=3", "dataset.train_limit=1200", "batch_size=16",
               "trainer.progress=false"]


def store(root: Path) -> list[str]:
    return [f"logger.mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}"]


def quiet(files: dict[str, str]) -> dict[str, str]:
    """Files but W&B's service logs (wandb/.../logs/), which its own process, orphaned by a
    kill -9, goes on writing for a moment."""
    return {k: v for k, v in files.items() if "/logs/debug" not in k}


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_every_point_once(run_dir: Path, db: Path, run_id: str) -> None:
    """Each tracker holds every number of history.jsonl and steps.jsonl, at its step, once."""
    wb = wandb_run(run_dir)
    for group, name in (("epoch", "history.jsonl"), ("step", "steps.jsonl")):
        kept = records(run_dir / name)
        for key in [k for k, v in kept[-1].items() if k != "step" and isinstance(v, int | float)]:
            if key.endswith(("_s", "_time", "samples_per_s")):
                continue  # timings: the killed process measured the points it logged
            expected = [(r["step"], float(r[key])) for r in kept]
            tag = f"{group}/{key}"
            assert mlflow_series(db, run_id, tag) == expected, tag
            assert wb.series(tag) == expected, tag
            assert csv_series(run_dir, tag) == expected, tag
            assert [(s, pytest.approx(v)) for s, v in expected] == \
                tensorboard_series(run_dir, tag), tag  # TensorBoard keeps float32


@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_a_run_killed_after_its_first_epoch_is_one_tracker_run_with_every_point_once(
        tmp_path, kill):
    run_dir = tmp_path / "run"
    args = [*SLOW_EPOCHS, ALL, *store(tmp_path), f"hydra.run.dir={run_dir}"]
    proc = start("train.py", args, tmp_path / "first.log")
    wait_for(lambda: (run_dir / "checkpoint.pt").exists() or proc.poll() is not None,
             what="the first checkpoint")
    os.killpg(proc.pid, kill)  # the whole group: wandb's own service gets it too
    # Ctrl-C: the run ends as interrupted, its tracker runs ended too (a Ctrl-C inside MLflow's
    # SQLite write left the database locked, and the run hung)
    assert proc.wait(timeout=60) == (-9 if kill == signal.SIGKILL else 130)
    ended = (run_dir / "summary.json").exists()
    assert ended == (kill == signal.SIGINT), "the run ended before the kill: lengthen it"
    if ended:
        assert summary(run_dir)["status"] == "interrupted"
    assert len(records(run_dir / "history.jsonl")) < 3
    if kill == signal.SIGKILL:  # a store it cannot open: one line, and the run as it was
        (run_dir / "run.lock").unlink()  # the killed process's (the next start removes it)
        before = quiet(snapshot(tmp_path))
        bad = run_script("train.py", [*args, "logger.mlflow.tracking_uri=sqlite:////proc/m.db"])
        assert bad.returncode == 2, bad.stderr[-2000:]
        assert bad.stderr.strip().startswith("error: logger.mlflow.tracking_uri=sqlite:////proc")
        assert len(bad.stderr.strip().splitlines()) == 1
        assert quiet(snapshot(tmp_path)) == before

    again = run_script("train.py", args)  # the same command resumes it
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming" in again.stdout + again.stderr
    done = summary(run_dir)
    assert done["status"] == "completed"

    (mlflow_run,) = mlflow_runs(tmp_path / "mlflow.db")  # one run, however many starts
    ids = json.loads((run_dir / "trackers.json").read_text())
    assert mlflow_run.info.run_id == ids["mlflow"]["run_id"]
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.data.tags["status"] == "completed"
    assert mlflow_run.data.tags["mlflow.runName"] == "run"
    assert mlflow_run.data.params["optimizer"] == "momentum"
    assert mlflow_run.data.params["epochs"] == "3"
    for key, value in done["metrics"].items():
        assert mlflow_run.data.metrics[key] == value, key
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    artifact = Path(client.download_artifacts(mlflow_run.info.run_id, "summary.json", tmp_path))
    assert json.loads(artifact.read_text()) == done

    wb = wandb_run(run_dir)
    assert wb.starts == 2 and wb.ids == {ids["wandb"]["id"]}  # two starts of one W&B run
    assert wb.exit_codes == ([0] if kill == signal.SIGKILL else [1, 0])
    assert wb.names == {"run"} and wb.groups == {"train"}
    assert wb.config["optimizer"] == "momentum" and wb.config["epochs"] == 3
    assert wb.summary["status"] == "completed" and wb.exit_codes[-1] == 0
    assert wb.summary["test_acc"] == done["metrics"]["test_acc"]
    assert "summary.json" in wb.files
    assert_every_point_once(run_dir, tmp_path / "mlflow.db", mlflow_run.info.run_id)
    assert "wandb sync" in (tmp_path / "first.log").read_text()  # says how to upload it

    before = snapshot(tmp_path)
    reused = run_script("train.py", args)  # finished: reused, and nothing new is logged
    assert reused.returncode == 0, reused.stderr[-2000:]
    assert snapshot(tmp_path) == before


def test_a_sweeps_runs_share_an_experiment_and_a_group(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "debug=fast", "seed=0,1", "logger=[mlflow,wandb]", *store(tmp_path),
            f"hydra.sweep.dir={sweep}", "trainer.progress=false"]
    proc = run_script("train.py", args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = mlflow_runs(tmp_path / "mlflow.db")
    # the sweep's arguments as typed (Hydra's own settings, hydra.*, are not among them)
    name = f"debug=fast seed=0,1 logger=[mlflow,wandb] {store(tmp_path)[0]} " \
           f"trainer.progress=false"
    assert len(runs) == 2 and len({r.info.experiment_id for r in runs}) == 1
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_experiment(runs[0].info.experiment_id).name == name
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1"]
    dirs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [wandb_run(d).groups for d in dirs] == [{name[:128]}] * 2  # W&B: 128 at most
    # the trackers' copies of summary.json (W&B's folders, MLflow's artifacts) are not runs
    assert sorted(r.path for r in find_runs(tmp_path)) == dirs

    before = snapshot(tmp_path)
    again = run_script("train.py", args)  # both reused: no new tracker run, nothing logged
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(mlflow_runs(tmp_path / "mlflow.db")) == 2
    assert {k: v for k, v in snapshot(tmp_path).items() if "multirun.yaml" not in k} == \
        {k: v for k, v in before.items() if "multirun.yaml" not in k}


def test_tune_trials_carry_their_trial_number_and_study(tmp_path):
    proc = run_script("tune.py", ["debug=fast", "hydra.sweeper.n_trials=2", "logger=mlflow",
                                  *store(tmp_path), f"hydra.sweep.dir={tmp_path / 'tune'}",
                                  "trainer.progress=false"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = mlflow_runs(tmp_path / "mlflow.db")
    assert sorted(r.data.tags["trial"] for r in runs) == ["0", "1"]
    (study,) = {r.data.tags["study"] for r in runs}
    assert study.startswith("digits-mlp-val_acc-")
    in_study = mlflow_runs(tmp_path / "mlflow.db", experiment=study)  # its experiment
    assert {r.info.run_id for r in in_study} == {r.info.run_id for r in runs}


@pytest.mark.slow
def test_a_torchrun_run_is_one_tracker_run(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{free_port()}", "train.py",
           "debug=fast", "device=cpu", "logger=[mlflow,wandb]", *store(tmp_path),
           f"hydra.run.dir={run_dir}", "trainer.progress=false"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert summary(run_dir)["processes"] == 2
    (run,) = mlflow_runs(tmp_path / "mlflow.db")
    assert run.info.status == "FINISHED"
    wb = wandb_run(run_dir)
    assert wb.starts == 1 and len(wb.ids) == 1
    epochs = records(run_dir / "history.jsonl")
    assert wb.series("epoch/val_acc") == [(r["step"], r["val_acc"]) for r in epochs]


def test_a_missing_tracker_package_is_one_line(tmp_path):
    """Where wandb is not installed (here: hidden), logger=wandb says what to install."""
    hide = tmp_path / "hide"
    (hide / "wandb").mkdir(parents=True)
    (hide / "wandb" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    env = {**os.environ, "PYTHONPATH": str(hide)}
    proc = run_script("train.py", ["debug=fast", "logger=wandb",
                                   f"hydra.run.dir={tmp_path / 'run'}"], env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: logger=wandb needs the wandb package, which is not "
                                   "installed: pip install wandb (or choose another logger: "
                                   "tensorboard, csv, mlflow, wandb, or none)")
    assert not (tmp_path / "run").exists()
