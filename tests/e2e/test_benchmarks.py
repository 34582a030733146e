"""The benchmark scripts run end to end (tiny sizes) and report the ratios they promise; the
GPU kit's dry mode, which runs the ones it shares with the GPU, is tested with the README's
commands (tests/e2e/test_readme.py)."""

from __future__ import annotations

import json

import pytest

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


def test_the_stacked_benchmark_reports_the_slots_occupancy(tmp_path):
    """zero_loss (its own path); the launcher comparisons run in the GPU kit's dry mode
    (tests/e2e/test_readme.py) and the records grid in make bench."""
    out = tmp_path / "stacked.json"
    proc = run_script("benchmarks/stacked.py", ["--setups", "zero_loss", "--runs", "4",
                                                "--zero-ptr", "64", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    (zero,) = json.loads(out.read_text())["results"]
    assert zero["runs"] == 4 and zero["slots"] == 4 and zero["steps_min"] <= zero["steps_max"]
    assert 0 < zero["occupancy"] <= 1 and zero["occupancy_while_jobs_waited"] is None


@pytest.mark.slow
def test_the_tune_benchmark_counts_epochs_and_waiting(tmp_path):
    out = tmp_path / "tune.json"
    proc = run_script("benchmarks/tune.py", ["--trials", "4", "--epochs", "2", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    none = result["pruners"]["none"]
    assert none["trials"] == 4 and none["epochs_trained"] == 8 and none["pruned"] == 0
    for name in ("median", "hyperband"):
        r = result["pruners"][name]
        assert r["epochs_vs_none"] == r["epochs_trained"] / 8 <= 1
    for r in result["lanes"].values():
        assert 0 <= r["waiting_share"] < 1 and r["busy_s"] <= 2 * r["span_s"]


@pytest.mark.slow
def test_the_trackers_benchmark_prices_every_logger_against_none(tmp_path):
    out = tmp_path / "trackers.json"
    proc = run_script("benchmarks/trackers.py", ["--runs", "1", "--rounds", "1", "--epochs", "1",
                                                 "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["logger"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["none", "tensorboard", "csv", "mlflow", "wandb"]
    assert rows["none"]["sweep_vs_none"]["ratio"] == rows["none"]["single_vs_none"]["ratio"] == 1
    for r in rows.values():
        assert r["sweep_s_per_run"] > 0 and r["single_run_s"] > 0


@pytest.mark.slow
def test_the_image_folder_benchmark_reports_delivery_end_to_end_and_the_first_read(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- bench:start -->\n<!-- bench:end -->\n")
    proc = run_script("benchmarks/suite.py", ["--quick", "--out", str(tmp_path / "cpu"),
                                              "--readme", str(readme), "--only", "image_folder"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "cpu" / "image_folder.json").read_text())
    for r in (result["delivery"]["resident"], result["delivery"]["streamed"],
              result["end_to_end"]["resident"]):
        assert 0 < r["ratio_min"] <= r["ratio"] <= r["ratio_max"] and r["rounds"] == 1
    assert result["first_read"]["files"] == 330 and result["first_read"]["cache_mb_s"] > 0
    assert readme.read_text().count("| image_folder |") == 4
