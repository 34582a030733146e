"""Prune-and-retrain experiments: masks, methods, FLOPs, modes, resume, report, torchrun, preset."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import torch

from src.pruning.ratios import keep_ratios
from src.tasks.pruning import run_pruning
from tests.helpers.pruning import DIGITS, QUIET, cells
from tests.helpers.runs import ROOT, SMALL_FAKE, compose_train, run_script


def test_a_killed_experiment_resumes_skipping_finished_cells(tmp_path):
    args = ["pruning=magnitude", *DIGITS, "pruning.keep_ratios.count=4", "epochs=2",
            "pruning.retrain_epochs=2"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_pruning(compose_train(args), whole)  # also trains the shared reference (sibling dir)
    cmd = [sys.executable, "train.py", *args, f"hydra.run.dir={killed}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = killed / "cells" / "rep0_ratio00.json"
    deadline = time.time() + 120
    while not first.exists() and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = cells(killed)
    assert 1 <= len(done) < 4, "experiment ended before the kill: lengthen it"
    stamps = {p.name: p.stat().st_mtime_ns for p in (killed / "cells").glob("*.json")}
    proc = run_script("train.py", [*args, f"hydra.run.dir={killed}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    for name in done:
        assert f"cell {name} (keep" in log and "already finished: skipped" in log
    assert "cell 4 of 4: rep0_ratio03" in log  # how far it has come, in its log too
    assert log.strip().splitlines()[-1].endswith(f"run directory: {killed}")
    assert {p.name: p.stat().st_mtime_ns for p in (killed / "cells").glob("*.json")
            if p.name in stamps} == stamps  # finished cells untouched
    strip = ("retrain_wall_s",)
    a, b = cells(whole), cells(killed)
    assert list(a) == list(b) == [f"rep0_ratio{i:02d}" for i in range(4)]
    for name in a:
        assert {k: v for k, v in a[name].items() if k not in strip} == {
            k: v for k, v in b[name].items() if k not in strip}, name
    assert json.loads((killed / "summary.json").read_text())["cells"] == 4


def test_pruning_under_torchrun_factorises_once_and_writes_one_result_set(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "train.py", "pruning=alds", *DIGITS, "pruning.keep_ratios.count=2",
           f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    dirs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())  # the reference and the run
    assert len(dirs) == 2 and dirs[0].startswith("reference-") and dirs[1] == "run"
    results = cells(run_dir)
    assert list(results) == ["rep0_ratio00", "rep0_ratio01"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["processes"] == 2
    for name, record in results.items():
        ckpt = torch.load(run_dir / "cells" / name / "checkpoint.pt", weights_only=True)
        assert abs(record["keep"] - record["keep_target"]) <= 0.01  # whole ranks
        assert record["plan"] == ckpt["plan"] and record["speedup"] > 0  # factorised layers
        kept = 0
        for layer, mask in ckpt["masks"].items():
            weight = ckpt["model"][f"{layer}.weight"]
            assert torch.all(weight[mask == 0] == 0), layer
            kept += int(mask.sum())
        assert kept == record["params_kept"]


def test_seed_004_preset_runs_with_debug_fast_and_plots(tmp_path):
    seed_setup = compose_train(["experiment=prune_resnet20_cifar10"])
    assert seed_setup.model._target_.endswith("resnet20") and seed_setup.dataset.name == "cifar10"
    assert seed_setup.epochs == 182 and seed_setup.optimizer.lr == 0.1
    assert seed_setup.scheduler.milestones == [91, 136] and seed_setup.scheduler.warmup_steps > 0
    assert len(keep_ratios(seed_setup.pruning.keep_ratios)) == 15
    cfg = compose_train(["experiment=prune_resnet20_cifar10", "debug=fast", *SMALL_FAKE, *QUIET,
                         "pruning=filter_l1", "pruning.keep_ratios.count=1",
                         "dataset.train_limit=64", "dataset.eval_limit=64"])
    assert run_pruning(cfg, tmp_path / "run") >= 0.0
    results = cells(tmp_path / "run")
    assert list(results) == ["rep0_ratio00"] and results["rep0_ratio00"]["keep_target"] == 0.8
    reference = json.loads((tmp_path / "run" / "reference.json").read_text())
    for record in results.values():
        assert record["flops_kept"] < reference["flops"]
        assert 0.0 <= record["test_top5_err"] <= record["test_top1_err"] <= 1.0
    proc = run_script("plots.py", ["figure=pruning", f"runs={tmp_path}/*",
                                   f"out_dir={tmp_path / 'plots'}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("pruning.pdf", "pruning.png", "pruning_arrays.npz", "prunability.md"):
        assert (tmp_path / "plots" / name).is_file()
    arrays = np.load(tmp_path / "plots" / "pruning_arrays.npz")  # no pickle needed
    assert arrays["cells_test_top1_err"].shape == (1, 1, 1, 1)  # nets, ratios, reps, methods
    report = json.loads((tmp_path / "plots" / "prunability.json").read_text())
    assert [r["delta"] for r in report][:3] == [-10.0, -5.0, -2.0] and len(report) == 13
