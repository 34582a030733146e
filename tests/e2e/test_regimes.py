"""The regimes-of-SGD study: data, networks, alpha-scaled losses, step-based SGD, observables,
checkpoints, sweeps and the phase diagram."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from src.analysis.runs import find_runs
from src.core.files import read_jsonl
from src.regimes.data import teacher_student
from tests.helpers.datafiles import write_cifar10, write_mnist_tree
from tests.helpers.runs import ROOT, compose_train, run_script, summary, train

# A perceptron on 256 teacher-student points in d = 16: fits in a few hundred steps.
SMALL = ["task=regimes", "device=cpu", "logger=none", "dataset.source.d=16",
         "dataset.ptr=256", "dataset.pte=256", "task.alpha=4"]


def test_mnas_trains_on_cifar_animal_with_the_centred_output(tmp_path):
    write_cifar10(tmp_path / "data", per_batch=4)  # 24 images
    run_dir = tmp_path / "run"
    train(run_dir, "task=regimes", "dataset=cifar_animal", "model=mnas", "model.width=2",
          f"data_dir={tmp_path / 'data'}", "dataset.ptr=16", "dataset.pte=8", "batch_size=4",
          "task.temp=0.5", "task.max_step=12", "task.eval_every=4", "task.ckpt_step_points=3",
          "task.ckpt_grad_stats=4", "device=cpu", "logger=none")
    s = summary(run_dir)
    history = read_jsonl(run_dir / "history.jsonl")
    assert s["status"] == "completed" and s["width"] == 2 and s["dt"] == pytest.approx(0.5 * 4 * 2)
    assert history[0]["train_aloss"] == pytest.approx(1.0)  # centred: pred = 0 at the start
    assert history[-1]["dnorm"] > 0 and history[-1]["ntk_norm"] > 0


def test_gd_sde_runs_resumable_and_leaves_older_sgd_digests_alone(tmp_path):
    from src.lifecycle.identity import config_digest

    cfg = compose_train(SMALL)
    older = OmegaConf.create(OmegaConf.to_container(cfg))
    del older.task["dynamics"]  # a config from before task.dynamics existed
    assert config_digest(cfg) == config_digest(older)
    assert config_digest(compose_train([*SMALL, "task.dynamics=gd_sde"])) != config_digest(cfg)
    run_dir = tmp_path / "sde"
    args = [*SMALL, "task.dynamics=gd_sde", "batch_size=16", "task.dt=1", "task.max_step=200"]
    train(run_dir, *args)
    s = summary(run_dir)
    assert s["status"] == "completed" and s["dynamics"] == "gd_sde"
    assert s["temp"] == pytest.approx(1 / 16)
    history = read_jsonl(run_dir / "history.jsonl")
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    # the noise is drawn from the run's seed: the same command gives the same run
    train(tmp_path / "again", *args)
    assert summary(tmp_path / "again")["metrics"] == s["metrics"]
    other = run_script("train.py", [*SMALL, "task.dynamics=langevin",
                                    f"hydra.run.dir={tmp_path / 'bad'}"])
    assert other.returncode == 2 and "task.dynamics=langevin" in other.stderr
    assert "sgd, gd_sde" in other.stderr


# ---------------------------------------------------------------- runs


def test_perceptron_fits_separable_data_to_zero_training_error(tmp_path):
    run_dir = tmp_path / "run"
    train(run_dir, *SMALL, "batch_size=16", "task.dt=1", "task.ckpt_grad_stats=32")
    s = summary(run_dir)
    assert s["status"] == "completed" and s["stop_reason"] in ("zero_loss", "margin")
    assert s["metrics"]["train_err"] == 0 and s["metrics"]["train_nd"] == 0
    assert s["metrics"]["train_margin"] >= 1
    history = read_jsonl(run_dir / "history.jsonl")
    assert history[0]["step"] == 0 and history[0]["train_aloss"] == pytest.approx(1.0)
    # a perceptron's tangent kernel x.x'/d does not depend on w: it never moves
    assert max(abs(r["ntk_delta"]) for r in history) < 1e-10 and history[-1]["ntk_norm"] > 0
    losses = [r["train_loss"] for r in history]
    assert len(history) >= 5 and losses == sorted(losses, reverse=True)
    assert s["dt"] == 1 and s["temp"] == pytest.approx(1 / 16)
    # alignment with the teacher e_1: none has moved at the start, and every point is unfitted
    first, last = history[0], history[-1]
    assert first["dw_par2"] == 0 and first["dw_perp2"] == 0
    ds = compose_train(SMALL).dataset
    points = teacher_student(256, 256, ds.seed_train, ds.seed_test, d=16)
    assert first["x1_unfit"] == pytest.approx(float(points.train_x[:, 0].abs().mean()))
    assert last["align"] > first["align"] and last["dw_par2"] > 0
    assert last["x1_unfit"] is None  # all fitted: no unfitted point to average over


def test_temperature_sets_the_learning_rate_of_the_mlp(tmp_path):
    run_dir = tmp_path / "run"
    train(run_dir, *SMALL, "model=mf_mlp", "model.width=16", "model.depth=2", "batch_size=8",
          "task.temp=0.05", "task.max_step=20", "task.ckpt_grad_stats=16", "task.alpha=1")
    s = summary(run_dir)
    assert s["dt"] == pytest.approx(0.05 * 8 * 16) and s["width"] == 16
    assert s["stop_reason"] == "max_step" and s["step"] == 20
    history = read_jsonl(run_dir / "history.jsonl")
    assert history[-1]["ntk_delta"] > 0  # feature learning: the MLP's kernel moves


def test_wall_time_budget_stops_a_run_that_keeps_its_data(tmp_path):
    run_dir = tmp_path / "run"
    train(run_dir, *SMALL, "task.alpha=1000", "batch_size=1", "task.dt=1e-4",
          "task.max_wall=1", "task.eval_every=50", "task.ckpt_step_points=40")
    s = summary(run_dir)
    assert s["status"] == "completed" and s["stop_reason"] == "max_wall"
    (run,) = find_runs(str(run_dir))
    assert len(run.history) >= 2 and run.history[-1]["step"] == s["step"] > 0
    assert run.config["task.max_wall"] == 1 and run.config["choice.task"] == "regimes"


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path):
    args = [*SMALL, "task.alpha=1000", "batch_size=1", "task.dt=1e-3", "task.max_step=30000",
            "task.eval_every=500", "task.save_every_s=0", "task.ckpt_step_points=10"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    train(whole, *args)
    cmd = [sys.executable, "train.py", *args, f"hydra.run.dir={killed}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (
            killed / "checkpoint.pt").exists():
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)  # mid-run: no chance to clean up
    assert proc.wait() == -signal.SIGKILL and not (killed / "summary.json").exists()
    assert len(read_jsonl(killed / "history.jsonl")) >= 1  # saved data survives the kill
    train(killed, *args)
    a, b = summary(whole), summary(killed)
    assert a["metrics"] == b["metrics"] and a["step"] == b["step"] == 30000
    strip = ("wall_s",)
    assert [{k: v for k, v in r.items() if k not in strip} for r in read_jsonl(
        whole / "history.jsonl")] == [{k: v for k, v in r.items() if k not in strip}
                                       for r in read_jsonl(killed / "history.jsonl")]


def test_sweep_skips_finished_runs_and_draws_the_phase_diagram(tmp_path):
    sweep = ["-m", *SMALL, "batch_size=8,32", "task.dt=0.1,1", "task.max_step=50",
             f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    first = run_script("train.py", sweep)
    assert first.returncode == 0, first.stderr[-2000:]
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "sweep").rglob("summary.json")}
    assert len(stamps) == 4
    again = run_script("train.py", sweep)
    assert again.returncode == 0 and "already completed" in again.stdout + again.stderr
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
    out = tmp_path / "plots"
    proc = run_script("plots.py", [f"runs={tmp_path / 'sweep'}", "figure=phase_diagram",
                                   f"out_dir={out}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    kinds, files = ("phase_diagram", "phase_norm"), ("png", "pdf", "json")
    assert {p.name for p in out.iterdir()} == {f"{k}.{e}" for k in kinds for e in files}


def test_presets_run_with_debug_fast(tmp_path):
    write_mnist_tree(tmp_path / "data", "MNIST")
    for preset in ("regimes_perceptron_chi1", "regimes_mnist_parity_lazy"):
        run_dir = tmp_path / preset
        extra = ["dataset.ptr=6", "dataset.pte=3", "batch_size=2"] if "mnist" in preset else []
        train(run_dir, f"experiment={preset}", "debug=fast", "device=cpu",
              f"data_dir={tmp_path / 'data'}", *extra)
        s = summary(run_dir)
        assert s["status"] == "completed" and 0 <= s["objective"] <= 1
    assert summary(tmp_path / "regimes_perceptron_chi1")["ptr"] == 256  # debug=fast's limit


def test_wrong_dataset_for_a_task_is_one_line(tmp_path):
    proc = train(tmp_path / "a", "task=regimes", "dataset=digits", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: dataset=digits is not a binary")
    proc = train(tmp_path / "b", "dataset=teacher_student", check=False)
    assert proc.returncode == 2 and "add task=regimes" in proc.stderr
    proc = train(tmp_path / "c", *SMALL, "batch_size=512", check=False)
    assert proc.returncode == 2 and "batch_size=512 exceeds the 256 training points" in proc.stderr
    assert not any((tmp_path / d).exists() for d in "abc")
