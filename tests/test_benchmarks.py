"""The benchmark scripts run end to end (tiny sizes) and report the ratios they promise; the
GPU kit's dry mode runs the ones it shares with the GPU."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import ROOT, run_script


def test_regimes_benchmark_reports_step_costs_and_ntk_time(tmp_path):
    out = tmp_path / "regimes.json"
    proc = run_script("benchmarks/regimes.py", ["--steps", "300", "--ptr", "512", "--ntk-n", "8",
                                                "--width", "16", "--depth", "2", "--inputs",
                                                "10", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["compiled_speedup"] == pytest.approx(
        result["eager_step_us"] / result["compiled_step_us"])
    assert result["ntk"]["seconds"] > 0


def test_optimizer_benchmark_reports_its_ratios(tmp_path):
    out = tmp_path / "optimizers.json"
    proc = run_script("benchmarks/optimizers.py", ["--model", "mlp", "--steps", "1",
                                                   "--repeats", "1", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["step_ratio_vs_sgd_m"]["sgd_m"] == 1.0
    assert set(result["step_ms"]) >= {"momo", "momo_adam", "prox_sps", "adabound", "lion"}
    assert 0 < result["norms_share_of_epoch"] < 1


def test_the_gpu_kit_runs_every_step_in_its_dry_mode(tmp_path):
    """benchmarks/gpu.sh --dry: the cuda-marked tests on the CPU, then every GPU benchmark at
    tiny sizes (this is also where throughput.py, compression.py, evaluation.py and pruning.py
    are checked end to end)."""
    out = tmp_path / "gpu"
    proc = subprocess.run(["bash", "benchmarks/gpu.sh", "--dry", "--out", str(out)], cwd=ROOT,
                          text=True, capture_output=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    tests = (out / "cuda_tests.xml").read_text()
    assert 'failures="0"' in tests and 'errors="0"' in tests and 'skipped="0"' in tests
    assert 'tests="0"' not in tests
    row = json.loads((out / "throughput.json").read_text())["rows"][0]
    for key in ("ours_img_s", "standard_img_s", "bare_loop_img_s", "ours_ema5_img_s"):
        assert row[key] > 0
    assert row["speedup_vs_standard"] == row["ours_img_s"] / row["standard_img_s"]
    compression = json.loads((out / "compression.json").read_text())
    assert compression["training"][0]["time_per_sample_ratio"] > 0
    assert [p["bits"] for p in compression["packing"]] == [1, 2, 3, 4, 8]
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["states"] == 12 and evaluation["pairs"] == 2
    assert evaluation["accuracy_identical"] and evaluation["loss_max_rel_diff"] == 0.0  # exact
    assert evaluation["speedup_min"] <= evaluation["speedup"] <= evaluation["speedup_max"]
    rows = json.loads((out / "pruning.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"filter_l1", "pfp", "alds"}
    for r in rows:
        assert r["speedup_min"] <= r["speedup"] <= r["speedup_max"]
        assert r["max_abs_diff"] <= 1e-4 and r["params"] < r["params_reference"]
    bad = subprocess.run(["bash", "benchmarks/gpu.sh", "--fast"], cwd=ROOT, text=True,
                         capture_output=True)
    assert bad.returncode == 2 and "unknown argument --fast" in bad.stderr
