"""eval.py, tune.py and plots.py as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from tests.helpers.runs import run_script, summary, train


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    train(run_dir, "debug=fast", "epochs=2", "device=cpu")
    return run_dir


@pytest.mark.smoke  # make test-fast runs it
def test_eval_reproduces_the_runs_own_test_metrics(finished):
    proc = run_script("eval.py", [f"checkpoint={finished}", "splits=[val,test]", "device=cpu"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads((finished / "eval.json").read_text())["metrics"]
    expected = summary(finished)["metrics"]
    for key in ("test_acc", "test_loss", "best/val_acc", "ema_0.99/test_acc",
                "ema_0.9/best/test_loss"):
        assert got[key] == pytest.approx(expected[key], rel=1e-9), key
    assert "ema_0.99" in proc.stdout and "test acc %" in proc.stdout


@pytest.mark.parametrize("content", [None, b"garbage"])
def test_eval_of_a_missing_or_foreign_checkpoint_is_one_line(tmp_path, content):
    target = tmp_path / "checkpoint.pt"
    if content is not None:
        target.write_bytes(content)
        (tmp_path / ".hydra").mkdir()
        (tmp_path / ".hydra" / "config.yaml").write_text("seed: 0\n")
    proc = run_script("eval.py", [f"checkpoint={target}"])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "checkpoint" in lines[0]


@pytest.mark.smoke  # make test-fast runs it
def test_tune_twice_against_one_sqlite_file_continues_the_study(tmp_path):
    db = tmp_path / "study" / "optuna.db"
    sweep = tmp_path / "trials"
    args = ["debug=fast", "trainer.progress=false", "logger=none",
            "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage=sqlite:///{db}",
            "hydra.sweeper.study_name=t", f"hydra.sweep.dir={sweep}"]
    for _ in range(2):
        proc = run_script("tune.py", args)
        assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{db}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4
    assert all(0.0 <= t.value <= 1.0 for t in complete)
    assert {"optimizer.lr", "optimizer.weight_decay", "batch_size"} <= set(complete[0].params)
    # The best trial comes back as a preset that train.py trains to the same objective.
    assert "reproduce with: python train.py" in proc.stderr + proc.stdout
    best = sweep / "experiment" / "best.yaml"
    assert best.read_text().startswith("# @package _global_")
    again = tmp_path / "again"
    line = next(x for x in proc.stdout.splitlines() if x.startswith("  or: python train.py"))
    preset = line.split("python train.py ")[1].split()
    assert preset[:3] == ["--config-dir", str(sweep), "experiment=best"]
    proc = run_script("train.py", [*preset, f"hydra.run.dir={again}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary(again)["objective"] == study.best_value


def png_and_pdf(png: Path) -> None:
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> Path:
    """Small sweeps in the shapes the figures need, made by train.py itself."""
    root = tmp_path_factory.mktemp("sweeps")
    quiet = ["trainer.progress=false", "logger=none", "debug=fast"]
    for name, args in {
        "lr": ["-m", "epochs=2", "optimizer=sgd,momentum", "optimizer.lr=0.05,1e6", "seed=0,1"],
        "ema": ["-m", "epochs=2", "scheduler=cosine,constant", "seed=0,1"],
        "bins": ["-m", "optimizer=compressed_sgd_vote", "num_bits=2", "trainer.log_every=1"],
    }.items():
        proc = run_script("train.py", [*args, *quiet, f"hydra.sweep.dir={root / name}"])
        assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def plot(args: list[str]) -> None:
    proc = run_script("plots.py", args)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.smoke  # make test-fast runs it
def test_curves_group_by_the_swept_keys_with_a_band_over_seeds(sweeps, tmp_path):
    plot([f"runs={sweeps / 'ema'}", "metric=ema_0.9/val_acc", f"out_dir={tmp_path}"])
    png_and_pdf(tmp_path / "curves_ema_0.9_val_acc_vs_epoch.png")


def test_ema_figure_and_table(sweeps, tmp_path):
    plot([f"runs={sweeps / 'ema'}", "figure=ema", f"out_dir={tmp_path}"])
    png_and_pdf(tmp_path / "ema_val_acc.png")
    table = pd.read_csv(tmp_path / "ema_test_acc.csv")
    assert list(table.columns) == ["scheduler", "model", "test_acc_mean", "test_acc_std",
                                   "seeds", "runs"]
    assert list(table["scheduler"].unique()) == ["constant", "cosine"]
    assert list(table["model"].unique()) == ["no EMA", "EMA 0.9", "EMA 0.99"]
    assert (table["seeds"] == 2).all() and table["test_acc_std"].notna().all()
    from src.analysis.runs import find_runs

    cosine = [r.summary["metrics"]["ema_0.9/test_acc"] for r in find_runs(sweeps / "ema")
              if r.config["choice.scheduler"] == "cosine"]
    row = table[(table["scheduler"] == "cosine") & (table["model"] == "EMA 0.9")].iloc[0]
    assert row["test_acc_mean"] == pytest.approx(np.mean(cosine))
    assert row["test_acc_std"] == pytest.approx(np.std(cosine, ddof=1))
    md = (tmp_path / "ema_test_acc.md").read_text()
    assert "| scheduler | no EMA | EMA 0.9 | EMA 0.99 |" in md and " ± " in md


def test_lr_stability_marks_diverged_runs(sweeps, tmp_path):
    plot([f"runs={sweeps / 'lr'}", "figure=lr_stability", f"out_dir={tmp_path}"])
    png_and_pdf(tmp_path / "lr_stability_val_acc.png")


def test_bin_usage_stacks_the_levels(sweeps, tmp_path):
    plot([f"runs={sweeps / 'bins'}", "figure=bin_usage", f"out_dir={tmp_path}"])
    png_and_pdf(tmp_path / "bin_usage.png")


def test_plots_with_an_unknown_metric_or_figure_is_one_line(sweeps, tmp_path):
    for args in (["metric=nope"], ["figure=violin"]):
        proc = run_script("plots.py", [f"runs={sweeps / 'ema'}", *args, f"out_dir={tmp_path}"])
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr


def test_results_aggregate_over_seeds_and_skip_diverged_runs(sweeps):
    from src.analysis.grouping import distinguishing_keys
    from src.analysis.runs import aggregate, find_runs, runs_frame

    runs = find_runs(sweeps / "lr")
    frame = runs_frame(runs)
    assert len(frame) == 8
    assert distinguishing_keys(runs) == ["choice.optimizer", "optimizer.lr"]
    stats = aggregate(frame, ["choice.optimizer", "optimizer.lr"], ["test_acc"])
    diverged = stats[stats["optimizer.lr"] == "1000000.0"]
    assert (diverged["test_acc_count"] == 0).all()  # diverged runs have no metrics
    ok = stats[(stats["optimizer.lr"] == "0.05") & (stats["choice.optimizer"] == "sgd")]
    rows = frame[(frame["optimizer.lr"] == 0.05) & (frame["choice.optimizer"] == "sgd")]
    assert ok["test_acc_mean"].item() == pytest.approx(rows["test_acc"].mean())
    assert ok["test_acc_std"].item() == pytest.approx(rows["test_acc"].std())
    assert ok["test_acc_count"].item() == 2
