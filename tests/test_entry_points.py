"""eval.py, tune.py and plots.py as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from tests.conftest import run_script, summary, train


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    train(run_dir, "debug=fast", "epochs=2", "device=cpu")
    return run_dir


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


def test_tune_twice_against_one_sqlite_file_continues_the_study(tmp_path):
    db = tmp_path / "study" / "optuna.db"
    args = ["debug=fast", "trainer.progress=false", "trainer.tensorboard=false",
            "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage=sqlite:///{db}",
            "hydra.sweeper.study_name=t", f"hydra.sweep.dir={tmp_path / 'trials'}"]
    for _ in range(2):
        proc = run_script("tune.py", args)
        assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{db}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4
    assert all(0.0 <= t.value <= 1.0 for t in complete)
    assert {"optimizer.lr", "optimizer.weight_decay"} <= set(complete[0].params)


def test_plots_writes_png_and_pdf_curves(finished, tmp_path):
    proc = run_script("plots.py", [f"runs={finished}", "metric=ema_0.99/val_acc",
                                   f"out_dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    png = tmp_path / "curves_ema_0.99_val_acc_vs_epoch.png"
    pdf = png.with_name(png.name.replace(".png", ".pdf"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_plots_with_an_unknown_metric_is_one_line(finished, tmp_path):
    proc = run_script("plots.py", [f"runs={finished}", "metric=nope", f"out_dir={tmp_path}"])
    assert proc.returncode == 2 and "metric=nope" in proc.stderr
