"""The benchmark scripts run end to end (tiny sizes) and report the ratios they promise."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_script


def test_throughput_benchmark_reports_its_ratios(tmp_path):
    out = tmp_path / "throughput.json"
    proc = run_script("benchmarks/throughput.py", ["--models", "mlp", "--images", "500",
                                                   "--epochs", "1", "--batches", "50",
                                                   "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(out.read_text())["rows"][0]
    for key in ("ours_img_s", "standard_img_s", "bare_loop_img_s", "ours_ema5_img_s"):
        assert row[key] > 0
    assert row["speedup_vs_standard"] == row["ours_img_s"] / row["standard_img_s"]


def test_compression_benchmark_reports_its_ratios(tmp_path):
    out = tmp_path / "compression.json"
    proc = run_script("benchmarks/compression.py", ["--models", "mlp", "--batch", "16",
                                                    "--samples", "256", "--epochs", "2",
                                                    "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["training"][0]["time_per_sample_ratio"] > 0
    assert [p["bits"] for p in result["packing"]] == [1, 2, 3, 4, 8]


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
