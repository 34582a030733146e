"""Figures and tables from messy folders: honest grouping, the label table, runs that did not
finish drawn as such, every figure kind from a folder of mixed runs, and the README's plots.py
commands run as bash runs them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from src.analysis.grouping import check_pooled, distinguishing_keys
from src.analysis.runs import find_runs
from src.cli.entry import run_name
from src.core.errors import ConfigError
from tests.helpers import mixed_runs
from tests.helpers.docs import pages
from tests.helpers.fake_runs import sgd
from tests.helpers.figures import (
    legend_ambiguities,
    legend_disagreements,
    legend_outgrows_axes,
)
from tests.helpers.runs import ROOT, hparams_of_run, run_script


def test_a_setting_nobody_grouped_by_is_never_pooled_as_a_seed(tmp_path):
    sgd(tmp_path, 0.1, 0)
    sgd(tmp_path, 0.1, 1, dataset="fake", config={"epochs": 1})
    runs = find_runs(tmp_path)
    assert distinguishing_keys(runs) == ["choice.dataset"]  # epochs follows the dataset here
    with pytest.raises(ConfigError, match=r"also differ in choice\.dataset"):
        check_pooled(runs, [])
    proc = run_script("plots.py", [f"runs={tmp_path}", "figure=curves", "group_by=[optimizer.lr]",
                                   f"out_dir={tmp_path / 'out'}"])
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "also differ in choice.dataset" in proc.stderr
    assert not (tmp_path / "out").exists()  # a refusal writes nothing


def test_a_figure_with_nothing_to_draw_is_an_error_not_an_empty_file(tmp_path):
    sgd(tmp_path, 0.1, 0)
    for args, says in ((["figure=curves", "metric=ema_0.99/val_acc"], "in no run's history"),
                       (["figure=bin_usage"], "logged level usage"),
                       (["figure=phase_diagram"], "regimes run"),
                       (["figure=pruning"], "no pruning run"),
                       (["figure=records"], "record run"),
                       (["figure=ema"], "track no EMA")):
        proc = run_script("plots.py", [f"runs={tmp_path}", *args, f"out_dir={tmp_path / 'o'}"])
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert says in proc.stderr
    assert not (tmp_path / "o").exists()


# -- every figure kind from a folder of mixed runs ----------------------------------------------


@pytest.fixture(scope="session")  # built once per worker: its tests share the "mixed" group
def mixed(tmp_path_factory) -> Path:
    return mixed_runs.build(tmp_path_factory.mktemp("mixed") / "runs")


KINDS = [("curves", []), ("curves", ["metric=ema_0.99/val_acc"]), ("lr_stability", []),
         ("ema", []), ("bin_usage", []), ("phase_diagram", []), ("pruning", []),
         ("pruning_methods", []),
         ("records", []), ("best_curves", ["top=2"]), ("sample_flips", []),
         ("sample_disagreement", []), ("sample_error_rates", []), ("sample_barcode", [])]


@pytest.mark.slow
@pytest.mark.xdist_group("mixed")  # one worker builds the mixed folder once
@pytest.mark.parametrize(("kind", "args"), KINDS, ids=[f"{k}{'-' if a else ''}{'-'.join(a)}"
                                                       for k, a in KINDS])
def test_every_figure_kind_accounts_for_every_run_of_a_mixed_folder(mixed, tmp_path, kind,
                                                                   args):
    proc = run_script("plots.py", [f"runs={mixed}", f"figure={kind}", *args,
                                   f"out_dir={tmp_path}"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    sidecars = sorted(tmp_path.rglob("*.json"))
    figures = [json.loads(p.read_text()) for p in sidecars if "series" in p.read_text()[:2000]]
    assert figures, f"{kind} wrote no figure"
    runs = {str(r.path) for r in find_runs(mixed)}
    for data in figures:
        assert data["width_in"] in (3.4, 7.0), data["width_in"]  # one or two paper columns
        assert not legend_disagreements(data), legend_disagreements(data)
        assert not legend_ambiguities(data), legend_ambiguities(data)
        assert not data["cut_texts"], data["cut_texts"]  # nothing hidden past the edges
        assert not legend_outgrows_axes(data)
        for axes in data["axes"]:  # a log axis labels at least two ticks
            assert all(len(axes[f"{a}ticks"]) >= 2 for a in "xy" if axes[f"{a}scale"] == "log")
        drawn = {p for s in data["series"] for p in s["runs"]} | {m["run"] for m in
                                                                 data["marks"]}
        left = {x["run"] for x in data["left_out"]}
        assert drawn.isdisjoint(left)
        assert drawn <= runs
        # Every run is drawn or left out with its reason (the kinds that draw one figure per
        # record, experiment or setting account for their own runs in each).
        if kind not in ("records", "best_curves", "pruning", "pruning_methods", "phase_diagram",
                        "sample_barcode"):
            assert drawn | left == runs, sorted(runs - drawn - left)
        for reason in {x["reason"] for x in data["left_out"]}:
            assert reason.split(" (")[0][:30] in proc.stdout  # and the leaving out is said
    if kind == "curves" and not args:
        (data,) = figures
        by_label = {s["label"]: s for s in data["series"]}
        pooled = [s for s in by_label.values() if "epochs=6" in s["label"]]
        assert len(pooled) == 4 and all(s["n"][0] == 2 for s in pooled)  # 2 seeds each
        assert {x["reason"] for x in data["left_out"]} >= {
            "diverged before its first epoch ended", "failed before its first epoch ended"}
    if kind == "lr_stability":
        (data,) = [f for f in figures if f["figure"] == "lr_stability"]
        assert [m["status"] for m in data["marks"]] == ["diverged"]
    if kind == "phase_diagram":
        regimes = {r for r in runs if "task=regimes" in r}
        for data in [f for f in figures if f["figure"] == "phase_diagram"][:1]:
            drawn = {p for s in data["series"] for p in s["runs"]} | {m["run"] for m in
                                                                     data["marks"]}
            assert drawn == regimes
    if kind == "bin_usage":
        (data,) = figures
        (series,) = data["series"]
        assert np.allclose(np.sum(series["fractions"], axis=1), 1.0)
    if kind == "records":
        assert "not next to the published scores" in proc.stdout
    if kind.startswith("sample_"):  # the optimizers sweep recorded its samples: all 8 drawn
        tracked = {r for r in runs if "track_samples" in r}
        assert len(tracked) == 8
        drawn = {p for data in figures for s in data["series"] for p in s["runs"]}
        assert drawn == tracked
    if kind == "sample_flips":
        (data,) = figures
        assert all(len(s["runs"]) == 2 for s in data["series"])  # two seeds pooled per setting


# -- the README's plots.py commands, as bash runs them ----------------------------------------


# The settings the tests add to make a README sweep fast; the README's own commands lack them.
FAST = re.compile(r"^(debug|dataset|dataset\..*|epochs|model|trainer\..*)=")


def readme_plots_commands() -> list[str]:
    """The plots.py commands of README.md and docs/."""
    return [line.split("#")[0].strip() for page in pages() for line in
            page.read_text().splitlines() if line.startswith(".venv/bin/python plots.py")]


@pytest.fixture(scope="module")
def readme_outputs(mixed, tmp_path_factory) -> Path:
    """outputs/runs as the README's sweeps leave it: the mixed folder plus the EMA (Figure 1 and
    per-sample) and regimes presets, each trained fast, under the names the README's own
    commands would give them."""
    work = tmp_path_factory.mktemp("readme")
    extra = work / "extra"
    for args in (["experiment=ema_resnet20_cifar10", "seed=0", "model=mlp", "dataset=fake",
                  "dataset.source.num_train=600", "dataset.source.num_test=200",
                  "dataset.val_size=100"],
                 ["experiment=ema_resnet20_cifar10_samples", "seed=0", "model=mlp",
                  "dataset=fake", "dataset.source.num_train=600", "dataset.source.num_test=200",
                  "dataset.val_size=100", "epochs=2"],
                 ["experiment=regimes_perceptron_chi0", "batch_size=4,16", "task.dt=1",
                  "dataset.ptr=256", "dataset.pte=128", "task.max_wall=10"]):
        proc = run_script("train.py", ["-m", *args, "debug=fast", *mixed_runs.QUIET,
                                       f"hydra.sweep.dir={extra}"], timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    runs = work / "outputs" / "runs"
    runs.mkdir(parents=True)
    for folder in (mixed, extra):
        for run in folder.iterdir():
            if not run.is_dir():
                continue
            name = run.name
            if (run / ".hydra" / "overrides.yaml").exists():
                typed = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
                name = run_name(",".join(sorted(o for o in typed if not FAST.match(o))))
            shutil.copytree(run, runs / name, dirs_exist_ok=False)
    return work


@pytest.mark.slow
@pytest.mark.xdist_group("mixed")
@pytest.mark.parametrize("command", readme_plots_commands())
def test_the_readmes_plots_commands_work_as_typed(readme_outputs, command):
    line = command.replace(".venv/bin/python plots.py", f"{sys.executable} {ROOT}/plots.py")
    proc = subprocess.run(["bash", "-c", line], cwd=readme_outputs, text=True,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, command + "\n" + proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "wrote " in proc.stdout


# -- TensorBoard's HPARAMS tab ----------------------------------------------------------------


def test_tensorboard_hparams_compare_runs_by_what_matters(tmp_path):
    from tensorboard.plugins.hparams.api_pb2 import Status

    proc = run_script("train.py", ["-m", "debug=fast", "optimizer=sgd,momentum",
                                   "optimizer.lr=0.05,1e6", "trainer.progress=false",
                                   f"hydra.sweep.dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = {}
    for run_dir in sorted(d for d in tmp_path.iterdir() if d.is_dir()):
        hp, status = hparams_of_run(run_dir)
        seen[(hp["optimizer"], hp["optimizer.lr"])] = (hp, status)
    assert set(seen) == {("sgd", 0.05), ("sgd", 1e6), ("momentum", 0.05), ("momentum", 1e6)}
    hp, status = seen[("momentum", 0.05)]
    assert status == Status.Value("STATUS_SUCCESS") and hp["status"] == "completed"
    assert hp["averaging.decays"] == "[0.9, 0.99]"  # a list, as text
    assert {"dataset", "model", "scheduler", "averaging", "batch_size", "seed"} <= set(hp)
    assert not any(k.startswith(("pruning.", "trainer.")) for k in hp)  # nothing irrelevant
    hp, status = seen[("sgd", 1e6)]
    assert status == Status.Value("STATUS_FAILURE") and hp["status"] == "diverged"
