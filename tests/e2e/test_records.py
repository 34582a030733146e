"""Optimizer records: aggregation of generated runs, the best-score table, the figures, and one
record preset end to end (train.py -m, then plots.py figure=records)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from src.analysis.runs import find_runs
from tests.helpers.runs import run_script


def test_record_preset_end_to_end_with_debug_fast(tmp_path):
    """A record sweep on generated data (2 lrs x 2 seeds of momo), then plots.py figure=records."""
    sweep_dir, out = tmp_path / "sweep", tmp_path / "plots"
    proc = run_script("train.py", [
        "-m", "experiment=record_mnist_mlp", "lr_grid=momo", "dataset=fake",
        "dataset.source.num_train=600", "dataset.source.num_test=200", "debug=fast",
        "device=cpu", "trainer.progress=false", "logger=none",
        "optimizer.lr=1,1e-2", "seed=0,1", f"hydra.sweep.dir={sweep_dir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = find_runs(sweep_dir)
    assert len(runs) == 4 and {r.status for r in runs} == {"completed"}
    for r in runs:
        (rec,) = r.history
        assert len(rec["step_sizes"]) == rec["step"] == 256 // 32
        assert rec["step_size"] == pytest.approx(np.mean(rec["step_sizes"]))
        assert rec["grad_norm"] > 0 and rec["model_norm"] > 0 and rec["train_epoch_time"] > 0
        assert r.config["dataset.val_split"] == "test" and r.config["init_seed"] == 0
    proc = run_script("plots.py", ["figure=records", f"runs={sweep_dir}", f"out_dir={out}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    # A smoke run on fake data is its own table, said so, and not set next to the paper's.
    smoke = "mnist_mlp@epochs=1,debug=fast,dataset=fake"
    assert f"tabled as {smoke}" in proc.stdout
    stem = "mnist_mlp_epochs=1_debug=fast_dataset=fake"
    table = pd.read_csv(out / f"{stem}.csv")
    assert len(table) == 2 and (table["seeds"] == 2).all() and (table["runs"] == 2).all()
    assert table["step_size"].notna().all()
    assert (out / f"best_curves_{stem}_val_score.pdf").exists()
    assert (out / stem / "lr_stability_val_acc.png").exists()
    best = (out / "best_val_score.md").read_text()
    row = next(line for line in best.splitlines() if line.startswith(f"| {smoke} | momo |"))
    assert row.split(" | ")[4] == "n/a"  # no published score next to another setup
