"""The benchmark scripts run end to end (tiny sizes) and report the ratios they promise; the
GPU kit's dry mode, which runs the ones it shares with the GPU, is tested with the README's
commands (tests/e2e/test_readme.py)."""

from __future__ import annotations

import json

from tests.helpers.runs import run_script


def test_the_suite_runs_benchmarks_and_writes_their_table_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nintro\n\n<!-- bench:start -->\nold table\n"
                      "<!-- bench:end -->\n\n## later section\n")
    common = ["--quick", "--out", str(tmp_path / "cpu"), "--readme", str(readme)]
    for only in ("evaluation", "regimes"):  # the second run replaces the table, never appends
        proc = run_script("benchmarks/suite.py", [*common, "--only", only])
        assert proc.returncode == 0, proc.stderr[-3000:]
        text = readme.read_text()
        assert text.startswith("# Benchmarks\n\nintro\n\n<!-- bench:start -->\nMeasured by")
        assert text.endswith("<!-- bench:end -->\n\n## later section\n")
        assert text.count("<!-- bench:start -->") == 1 and "old table" not in text
        assert ("| evaluation | mlp: 12 states" in text) == (only == "evaluation")
    assert "| regimes | perceptron SGD step, compiled vs eager |" in text
    regimes = json.loads((tmp_path / "cpu" / "regimes.json").read_text())
    speed = regimes["compiled_speedup"]
    assert speed["ratio_min"] <= speed["ratio"] <= speed["ratio_max"] and speed["pairs"] == 2
    assert regimes["ntk"]["seconds"] > 0
    bad = run_script("benchmarks/suite.py", ["--only", "nothing"])
    assert bad.returncode == 2 and "invalid choice: 'nothing'" in bad.stderr


def test_optimizer_benchmark_reports_its_ratios(tmp_path):
    out = tmp_path / "optimizers.json"
    proc = run_script("benchmarks/optimizers.py", ["--model", "mlp", "--steps", "1",
                                                   "--repeats", "1", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["step_ratio_vs_sgd_m"]["sgd_m"] == 1.0
    assert set(result["step_ms"]) >= {"momo", "momo_adam", "prox_sps", "adabound", "lion"}
    assert 0 < result["norms_share_of_epoch"] < 1


def test_the_stacked_benchmark_reports_ratios_and_occupancy(tmp_path):
    out = tmp_path / "stacked.json"
    proc = run_script("benchmarks/stacked.py", [
        "--setups", "zero_loss", "records", "--runs", "4", "--zero-ptr", "64", "--images", "512",
        "--epochs", "1", "--rounds", "1", "--out", str(out)], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    zero, records = json.loads(out.read_text())["results"]
    assert zero["runs"] == 4 and zero["slots"] == 4 and zero["steps_min"] <= zero["steps_max"]
    assert 0 < zero["occupancy"] <= 1
    assert records["samples_per_sweep"] > 0  # the 7 x 3 grid ran under all three launchers
    for key in ("basic", "joblib", "stacked"):
        assert records[f"{key}_samples_per_s"] > 0
    r = records["stacked_vs_best"]
    assert r["ratio_min"] <= r["ratio"] <= r["ratio_max"]
