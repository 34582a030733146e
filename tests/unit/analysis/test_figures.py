"""Figures and tables from messy folders: honest grouping, the label table, runs that did not
finish drawn as such, every figure kind from a folder of mixed runs, and the README's plots.py
commands run as bash runs them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from src.analysis import labels
from src.analysis.figures import Options, draw
from src.analysis.grouping import distinguishing_keys
from src.analysis.runs import find_runs, runs_frame
from src.cli.entry import quote_paths, run_name
from src.core.errors import ConfigError
from tests.helpers.docs import pages
from tests.helpers.fake_runs import fake_run, mixed_folder, sgd
from tests.helpers.figures import (
    legend_ambiguities,
    legend_disagreements,
    legend_outgrows_axes,
)

# -- grouping ---------------------------------------------------------------------------------


def test_runs_that_differ_only_in_seed_and_neutral_settings_are_one_setting(tmp_path):
    for seed in (0, 1):  # trainer.progress and data_dir differ too: they change no result
        sgd(tmp_path, 0.1, seed)
    runs = find_runs(tmp_path)
    assert distinguishing_keys(runs) == []
    (series,) = json.loads(draw("curves", runs, Options(), tmp_path / "out").paths[2]
                           .read_text())["series"]
    assert series["label"] == "all runs" and series["n"] == [2, 2, 2]


def test_runs_of_another_kind_are_drawn_apart_not_dropped(tmp_path):
    """A regimes run has none of the optimizer keys: the curves of the others are still drawn
    and it is left out with its reason, never silently."""
    sgd(tmp_path, 0.1, 0)
    sgd(tmp_path, 1.0, 0)
    fake_run(tmp_path, "task=regimes", {"seed": 0, "task": {"alpha": 1.0}},
             {"task": "regimes"}, ["task=regimes"],
             history=[{"step": 1, "train_err": 0.1}], metrics={"test_err": 0.1})
    result = draw("curves", find_runs(tmp_path), Options(), tmp_path / "out")
    data = json.loads(result.paths[2].read_text())
    assert [s["label"] for s in data["series"]] == ["optimizer.lr=0.1", "optimizer.lr=1"]
    assert data["left_out"] == [{"run": str(tmp_path / "task=regimes"),
                                 "reason": "no val_acc in its history.jsonl"}]
    assert any("no val_acc" in note for note in result.notes)


def test_a_half_written_last_history_line_is_left_out(tmp_path, caplog):
    path = sgd(tmp_path, 0.1, 0)
    with open(path / "history.jsonl", "a") as f:
        f.write('{"epoch": 4, "val_a')  # killed while writing
    (run,) = find_runs(tmp_path)
    assert [r["epoch"] for r in run.history] == [1, 2, 3]
    assert "incomplete" in caplog.text
    (path / "history.jsonl").write_text('{"epoch": 1}\nnot json\n{"epoch": 3}\n')
    with pytest.raises(ConfigError, match="line 2 is not JSON"):
        find_runs(tmp_path)


def series_of(kind: str, runs: list, out) -> tuple[dict, dict]:
    data = json.loads(draw(kind, runs, Options(), out).paths[2].read_text())
    return data, {s["label"]: s for s in data["series"]}


def test_a_mixed_folder_is_never_pooled_and_each_label_names_how_its_runs_differ(tmp_path):
    runs = find_runs(mixed_folder(tmp_path / "runs"))
    data, curves = series_of("curves", runs, tmp_path / "out")
    assert len(curves) == 6  # two grid settings (two seeds each) and four runs alone
    assert sorted(s["n"][0] for s in curves.values()) == [1, 1, 1, 1, 2, 2]
    adam, csgd, trial, one = (next(label for label in curves if word in label) for word in
                              ("optimizer=adam", "compressed_sgd_vote", "batch_size=64",
                               "epochs=1, optimizer.lr=0.1"))
    assert "epochs=2" in adam and "optimizer.lr=0.001" in adam
    assert all(f in csgd for f in ("num_bits=1", "workers=4", "epochs=1", "optimizer.lr=0.0001"))
    assert all(f in trial for f in ("epochs=4", "optimizer.lr=0.84",
                                    "optimizer.weight_decay=0.0017"))
    assert "batch_size" not in adam and "num_bits" not in trial  # what they share goes unsaid
    assert curves[one]["marker"] == "o"  # one epoch: a marker, not an invisible line
    assert not legend_disagreements(data) and not legend_outgrows_axes(data)
    # The learning rate is the axis: it stands for nothing else, so no two optimizers (or the
    # trial's batch size) are pooled into one curve because their learning rates differ.
    data, by_lr = series_of("lr_stability", runs, tmp_path / "out")
    assert len(by_lr) == 5 and "all runs" not in by_lr
    (grid,) = [s for label, s in by_lr.items() if "epochs=3" in label]
    assert grid["x"] == [0.03, 0.3] and grid["n"] == [2, 2] and len(grid["runs"]) == 4
    assert not legend_disagreements(data) and not legend_outgrows_axes(data)
    assert len(data["axes"][0]["xticks"]) >= 2


def test_one_epoch_runs_are_points_in_every_ema_panel(tmp_path):
    runs = find_runs(mixed_folder(tmp_path / "runs"))
    data = json.loads(draw("ema", runs, Options(), tmp_path / "out").paths[2].read_text())
    single = [s for s in data["series"] if len(s["x"]) == 1]
    assert len(single) == 6 and all(s["marker"] == "o" for s in single)  # 2 runs x 3 models
    assert all(a["xticks"] for a in data["axes"])  # integer epochs, never 0.945 ... 1.05
    assert data["axes"][1]["xticks"] == ["1"]
    assert not legend_disagreements(data)


def regimes_run(root, b: int, dt: float, err: float, dnorm: float, stop: str = "zero_loss"):
    return fake_run(root, f"B={b},dt={dt}", {"seed": 0, "batch_size": b, "task": {"dt": dt}},
                    {"task": "regimes"}, [f"batch_size={b}", f"task.dt={dt}"],
                    metrics={"test_err": err, "dnorm": dnorm}, history=[{"step": 1}])


def test_phase_diagram_colours_span_zero_to_chance_and_log_axes_label_two_ticks(tmp_path):
    for i, (b, dt) in enumerate(((4, 0.5), (4, 1.0), (16, 1.0), (16, 2.0))):
        path = regimes_run(tmp_path / "runs", b, dt, 0.096 + 0.005 * i, 1.1 + 0.1 * i)
        summary = json.loads((path / "summary.json").read_text())
        summary.update(batch_size=b, dt=dt, temp=dt / b, width=1, stop_reason="zero_loss")
        (path / "summary.json").write_text(json.dumps(summary))
    paths = draw("phase_diagram", find_runs(tmp_path / "runs"), Options(), tmp_path).paths
    plane, norm = (json.loads(p.read_text()) for p in paths if p.suffix == ".json")
    assert plane["axes"][0]["clim"] == [0.0, 50.0]  # 9.6-11.1 % is a sliver of 0 to chance
    assert len(norm["axes"][0]["yticks"]) >= 2  # ||w - w0|| of 1.1-1.4: under a decade
    assert len(norm["axes"][0]["xticks"]) >= 2
    for data in (plane, norm):
        assert not legend_disagreements(data)


def test_a_legend_of_many_long_labels_goes_beside_the_axes_never_taller(tmp_path):
    for lr in (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0):
        sgd(tmp_path / "runs", lr, 0, config={"optimizer": {
            "_target_": "torch.optim.SGD", "lr": lr, "a_rather_long_setting_name": f"v{lr}",
            "another_long_setting_name_here": lr * 3}})
    data = json.loads(draw("curves", find_runs(tmp_path / "runs"), Options(),
                           tmp_path / "out").paths[2].read_text())
    assert len(data["legend"]["entries"]) == 12
    assert data["width_in"] == 7.0 and not legend_outgrows_axes(data)
    assert not legend_disagreements(data)
    assert not legend_ambiguities(data)  # twelve settings, ten colours: the last two dashed


# -- labels and marks -------------------------------------------------------------------------


def test_the_label_table_speaks_human():
    assert labels.metric_label("ema_0.99/val_acc") == "EMA 0.99, validation accuracy (%)"
    assert labels.metric_label("val_acc") == labels.metric_label("val_score")
    assert labels.metric_label("test_loss") == "Test loss (nats)"
    assert labels.metric_label("best/test_acc") == "Test accuracy at the best epoch (%)"
    assert labels.metric_label("train_err") == "Training error (%)"
    assert labels.setting_label("optimizer.lr", 0.1) == "optimizer.lr=0.1"
    assert labels.setting_label("choice.scheduler", "cosine") == "scheduler=cosine"
    assert labels.setting_label("choice.optimizer", "momentum") == "optimizer=momentum"
    low, high = labels.clip("val_acc", np.array([-5.0, 50.0]), np.array([60.0, 104.0]))
    assert low.tolist() == [0.0, 50.0] and high.tolist() == [60.0, 100.0]
    assert labels.higher_is_better("val_acc") and not labels.higher_is_better("val_loss")


@pytest.mark.parametrize(("metric", "edge"), [("val_acc", "bottom"), ("val_loss", "top")])
def test_diverged_runs_are_marks_at_the_worst_edge_never_values(tmp_path, metric, edge):
    for lr in (0.01, 0.1):
        sgd(tmp_path, lr, 0, metrics={"val_acc": 0.9, "val_loss": 0.3})
    sgd(tmp_path, 100.0, 0, status="diverged", metrics={}, history=[])
    result = draw("lr_stability", find_runs(tmp_path), Options(metric=metric), tmp_path)
    data = json.loads(result.paths[2].read_text())
    (series,) = data["series"]
    assert series["x"] == [0.01, 0.1]  # lr 100 is not a point of the curve
    assert [(m["status"], m["x"]) for m in data["marks"]] == [("diverged", 100.0)]
    assert not legend_disagreements(data)  # the mark and its legend entry: one colour
    assert any(f"at the {edge} edge" in note for note in result.notes)


def test_bands_stay_inside_the_metrics_range(tmp_path):
    for seed, acc in enumerate((0.99, 0.60)):
        sgd(tmp_path, 0.1, seed, history=[{"epoch": 1, "step": 1, "val_acc": acc}])
    (series,) = json.loads(draw("curves", find_runs(tmp_path), Options(), tmp_path).paths[2]
                           .read_text())["series"]
    assert series["mean"][0] + series["std"][0] > 100  # the raw band would leave [0, 100] %
    assert series["high"] == [100.0] and series["low"][0] == pytest.approx(
        series["mean"][0] - series["std"][0])


def test_regimes_statistics_of_a_diverged_output_are_nan_not_zero():
    import torch

    from src.regimes.observables import split_stats

    phi = torch.nn.functional.relu
    stats = split_stats(torch.tensor([0.5, float("nan")]), torch.tensor([1.0, -1.0]), 1.0,
                        lambda z: phi(1 - z))
    assert all(np.isnan(stats[k]) for k in ("err", "margin", "nd", "loss"))
    fine = split_stats(torch.tensor([0.5, -2.0]), torch.tensor([1.0, -1.0]), 1.0,
                       lambda z: phi(1 - z))
    assert fine["err"] == 0.0 and fine["nd"] == 1


def test_null_metrics_are_left_out_of_means(tmp_path):
    sgd(tmp_path, 0.1, 0, metrics={"test_err": 0.2})
    sgd(tmp_path, 0.1, 1, metrics={"test_err": None})  # a diverged regimes run writes null
    frame = runs_frame(find_runs(tmp_path))
    assert frame["test_err"].mean() == pytest.approx(0.2)


# -- the command line -------------------------------------------------------------------------


def test_path_values_with_equals_signs_work_as_typed():
    assert quote_paths(["runs=outputs/runs/*optimizer.lr=*", "figure=ema"]) == [
        "runs='outputs/runs/*optimizer.lr=*'", "figure=ema"]
    assert quote_paths(["checkpoint=outputs/runs/a=1,b=2"]) == [
        "checkpoint='outputs/runs/a=1,b=2'"]
    assert quote_paths(["runs=outputs/runs/*", "pruning.from_run=a,b"]) == [
        "runs=outputs/runs/*", "pruning.from_run=a,b"]  # no '=': globs and sweeps stay
    assert run_name("pruning.from_run='outputs/runs/a=1'") == "pruning.from_run=outputs_runs_a=1"


def test_the_docs_show_plots_commands():
    commands = [line for page in pages() for line in page.read_text().splitlines()
                if line.startswith(".venv/bin/python plots.py")]
    assert len(commands) >= 8


def test_a_text_past_the_figures_edge_is_reported():
    from src.analysis.style import cut_texts, figure

    fig, axes = figure()
    axes[0][0].set_title("debug=fast, epochs=3, num_bits=2, optimizer=compressed_sgd_vote, "
                         "trainer.log_every=1, workers=2", loc="left")
    fig.canvas.draw()
    assert cut_texts(fig) == [axes[0][0].get_title(loc="left")]
    axes[0][0].set_title("epochs=3", loc="left")
    fig.canvas.draw()
    assert cut_texts(fig) == []
