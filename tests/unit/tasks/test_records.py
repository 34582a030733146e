"""Optimizer records: aggregation of generated runs, the best-score table, the figures, and one
record preset end to end (train.py -m, then plots.py figure=records)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from src.analysis import records
from src.analysis.figures import Options, draw
from src.analysis.grouping import distinguishing_keys
from src.analysis.runs import find_runs
from src.core.errors import ConfigError
from src.models.vgg import vgg16_bn
from src.tasks.classify import run
from tests.helpers.runs import CONF, compose_train

RECORD_IDS = ["cifar10_resnet20", "cifar100_resnet110", "cifar10_vgg16", "cifar10_vit",
              "mnist_mlp"]
LR_GRIDS = sorted(p.stem for p in (CONF / "lr_grid").glob("*.yaml"))


def write_run(root: Path, name: str, lr: float, seed: int, val: list[float | None],
              status: str = "completed", record: str = "mnist_mlp", epochs: int = 3) -> Path:
    """A run directory as train.py leaves it: .hydra/, history.jsonl, summary.json."""
    path = root / f"experiment=record_{record},lr_grid={name},optimizer.lr={lr},seed={seed}"
    (path / ".hydra").mkdir(parents=True)
    config = {"seed": seed, "init_seed": 0, "epochs": epochs,
              "optimizer": {"_target_": f"x.{name}", "_partial_": True, "lr": lr,
                            "weight_decay": 0.0}}
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (path / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": {
        "optimizer": name, "experiment": f"record_{record}", "lr_grid": name, "dataset": "mnist",
        "model": "mlp"}}}}))
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
        [f"experiment=record_{record}", f"lr_grid={name}", f"optimizer.lr={lr}", f"seed={seed}"]))
    history = [{"epoch": e + 1, "step": 10 * (e + 1), "lr": lr, "train_loss": 1.0 / (e + 1),
                "train_acc": v, "val_loss": None if v is None else 1.0 - v, "val_acc": v,
                "grad_norm": 2.0 + seed, "model_norm": 5.0 + e, "train_epoch_time": 0.5,
                "wall_s": 1.0} for e, v in enumerate(val)]
    (path / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    metrics = {} if status == "diverged" else {"val_acc": val[-1]}
    (path / "summary.json").write_text(json.dumps({"status": status, "metrics": metrics}))
    return path


@pytest.fixture
def sweep(tmp_path: Path, monkeypatch) -> Path:
    """momo at two lrs, sgd_m at two lrs (one with a diverged seed, one diverged everywhere).

    The record's preset is taken to run 3 epochs, as these runs do, so they are its setup."""
    monkeypatch.setattr(records, "preset_setup", lambda rec: {
        "epochs": 3, "choice.debug": None, "choice.dataset": "mnist", "choice.model": "mlp"})
    root = tmp_path / "runs"
    for seed, vals in enumerate([[0.5, 0.6, 0.7], [0.4, 0.7, 0.8], [0.6, 0.5, 0.9]]):
        write_run(root, "momo", 1.0, seed, vals)
        write_run(root, "momo", 0.1, seed, [v - 0.2 for v in vals])
    write_run(root, "sgd_m", 0.1, 0, [0.3, 0.4, 0.5])
    write_run(root, "sgd_m", 0.1, 1, [0.3, 0.6, 0.6])
    # lr 1: the best scores, but seed 1 diverged in epoch 2 and seed 2 has no val score there
    write_run(root, "sgd_m", 1.0, 0, [0.8, 0.9, 0.95])
    write_run(root, "sgd_m", 1.0, 1, [0.7], status="diverged")
    write_run(root, "sgd_m", 1.0, 2, [0.9, None, 0.93])
    write_run(root, "sgd_m", 10.0, 0, [], status="diverged")  # diverged in its first epoch
    return root


def test_records_average_over_seeds_per_setting_and_epoch(sweep):
    table = records.records(find_runs(sweep))["mnist_mlp"]
    momo = table[table["id"] == "name=momo:lr=1.0:weight_decay=0.0"].set_index("epoch")
    vals = np.array([[0.5, 0.6, 0.7], [0.4, 0.7, 0.8], [0.6, 0.5, 0.9]])
    np.testing.assert_allclose(momo["val_score"], vals.mean(axis=0))
    np.testing.assert_allclose(momo["val_score_std"], vals.std(axis=0, ddof=1))
    np.testing.assert_allclose(momo["train_score"], vals.mean(axis=0))  # train_acc, renamed
    np.testing.assert_allclose(momo["grad_norm"], 3.0)  # seeds give 2, 3, 4
    assert (momo["learning_rate"] == 1.0).all() and (momo["learning_rate_std"] == 0).all()
    assert (momo[["runs", "seeds", "diverged"]] == [3, 3, 0]).all().all()
    assert (momo["name"] == "momo").all() and (momo["optimizer.lr"] == 1.0).all()
    assert {"model_norm", "train_epoch_time", "val_loss_std"} <= set(table.columns)


def test_diverged_seeds_and_missing_values_are_left_out_of_the_means(sweep):
    table = records.records(find_runs(sweep))["mnist_mlp"]
    sgd = table[table["id"] == "name=sgd_m:lr=1.0:weight_decay=0.0"].set_index("epoch")
    assert sgd.loc[1, "val_score"] == pytest.approx(np.mean([0.8, 0.7, 0.9]))
    assert sgd.loc[2, "val_score"] == pytest.approx(0.9)  # seed 1 stopped, seed 2 has null
    assert sgd.loc[2, "runs"] == 1 and np.isnan(sgd.loc[2, "val_score_std"])
    assert sgd.loc[3, "val_score"] == pytest.approx(np.mean([0.95, 0.93]))
    assert (sgd["seeds"] == 3).all() and (sgd["diverged"] == 1).all()
    assert not table["id"].str.contains("lr=10.0").any()  # no epoch ever finished


def test_best_table_skips_unstable_settings_and_sits_next_to_the_published_scores(sweep):
    runs = find_runs(sweep)
    best = records.best_table(records.records(runs), records.final_epochs(runs))
    rows = best.set_index("method")
    # sgd_m at lr 1 scores higher but lost a seed: the stable lr 0.1 is the best one.
    assert rows.loc["sgd_m", "lr"] == 0.1
    assert rows.loc["sgd_m", "val_score"] == pytest.approx(0.55)
    assert rows.loc["momo", "lr"] == 1.0 and rows.loc["momo", "seeds"] == 3
    assert rows.loc["momo", "val_score"] == pytest.approx(0.8)
    assert rows.loc["momo", "published_val_score"] == 0.9797
    assert rows.loc["momo", "published_lr"] == 1.0
    assert np.isnan(rows.loc["adam", "val_score"]) and rows.loc["adam", "published_lr"] == 1e-3
    assert set(best["record"]) == {"mnist_mlp"}  # other records' published rows left out
    text = records.markdown(best)
    assert "| mnist_mlp | momo | 80.00 ± 10.00 | 1 | 97.97 | 1 |" in text


def test_best_settings_ranks_the_top_learning_rates_per_method(sweep):
    table = records.records(find_runs(sweep))["mnist_mlp"]
    top = records.best_settings(table, 3, "val_acc", top=2)
    assert list(zip(top["name"], top["optimizer.lr"], strict=True)) == [
        ("momo", 1.0), ("momo", 0.1), ("sgd_m", 0.1)]
    by_loss = records.best_settings(table, 3, "val_loss", top=1)
    assert list(by_loss["optimizer.lr"]) == [1.0, 0.1]  # the lowest loss ranks first


def test_record_sweeps_group_by_lr_grid_and_lr_in_the_generic_figures(sweep):
    assert distinguishing_keys(find_runs(sweep)) == ["choice.lr_grid", "optimizer.lr"]


def test_a_run_of_another_setup_is_tabled_apart_and_not_compared_with_the_published(sweep):
    """A fake-data smoke run of the record preset must not join the real setting's mean."""
    smoke = write_run(sweep, "momo", 1.0, 7, [0.1, 0.1, 0.1])
    config = yaml.safe_load((smoke / ".hydra" / "config.yaml").read_text())
    hydra_cfg = yaml.safe_load((smoke / ".hydra" / "hydra.yaml").read_text())
    hydra_cfg["hydra"]["runtime"]["choices"].update(dataset="fake", debug="fast")
    (smoke / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra_cfg))
    (smoke / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    runs = find_runs(sweep)
    tables = records.records(runs)
    assert set(tables) == {"mnist_mlp", "mnist_mlp@debug=fast,dataset=fake"}
    real = tables["mnist_mlp"]
    momo = real[real["id"] == "name=momo:lr=1.0:weight_decay=0.0"]
    assert (momo["seeds"] == 3).all()  # the smoke run is not a fourth seed
    best = records.best_table(tables, records.final_epochs(runs))
    smoke_row = best[best["record"] == "mnist_mlp@debug=fast,dataset=fake"].iloc[0]
    assert np.isnan(smoke_row["published_val_score"])
    assert best[best["record"] == "mnist_mlp"].set_index("method").loc[
        "momo", "published_val_score"] == 0.9797


def test_reference_holds_the_spec_table():
    ref = records.reference()
    assert len(ref) == 20 and set(ref["record"]) == set(RECORD_IDS)
    row = ref[(ref["record"] == "cifar10_vit") & (ref["method"] == "adam")].iloc[0]
    assert (row["val_score"], row["lr"]) == (0.8602, 3.16e-4)


def test_records_figure_kind_writes_csvs_table_and_figures(sweep, tmp_path):
    out = tmp_path / "plots"
    paths = draw("records", find_runs(sweep), Options(metric="val_acc", top=2), out).paths
    names = {p.relative_to(out).as_posix() for p in paths}
    assert {"mnist_mlp.csv", "best_val_score.csv", "best_val_score.md",
            *(f"mnist_mlp/lr_stability_val_acc.{e}" for e in ("png", "pdf", "json")),
            *(f"best_curves_mnist_mlp_val_score.{e}" for e in ("png", "pdf", "json"))} == names
    assert all(p.stat().st_size > 0 for p in paths)
    written = pd.read_csv(out / "mnist_mlp.csv")
    assert list(written.columns[:3]) == ["id", "epoch", "learning_rate"]


def test_records_of_runs_without_a_record_preset_is_a_user_error(tmp_path):
    path = write_run(tmp_path, "momo", 1.0, 0, [0.5])
    (path / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"runtime": {"choices": {"optimizer": "momo", "experiment": None}}}}))
    with pytest.raises(ConfigError, match="experiment=record_"):
        records.records(find_runs(tmp_path))


@pytest.mark.parametrize("record", RECORD_IDS)
def test_every_record_preset_composes_with_every_lr_grid(record):
    for grid in LR_GRIDS:
        cfg = compose_train([f"experiment=record_{record}", f"lr_grid={grid}", "debug=fast"])
        assert cfg.optimizer._target_ == compose_train([f"optimizer={grid}"]).optimizer._target_
        assert cfg.optimizer.weight_decay == 0.0 and cfg.init_seed == 0
        assert cfg.scheduler._target_.endswith("constant")
        assert cfg.dataset.val_split == "test" and cfg.averaging.decays in (None, [])


def test_record_setups_follow_the_spec():
    setups = {r: compose_train([f"experiment=record_{r}"]) for r in RECORD_IDS}
    assert {r: (c.epochs, c.batch_size) for r, c in setups.items()} == {
        "cifar10_resnet20": (50, 128), "cifar100_resnet110": (100, 128),
        "cifar10_vgg16": (50, 128), "cifar10_vit": (200, 512), "mnist_mlp": (10, 128)}
    vit = setups["cifar10_vit"].model
    assert (vit.patch_size, vit.dim, vit.depth, vit.heads, vit.dim * vit.mlp_ratio,
            vit.dropout) == (4, 512, 6, 8, 512, 0.1)
    assert list(setups["cifar10_vgg16"].model.hidden) == [512, 512]
    assert setups["cifar10_vgg16"].model.dropout > 0
    mlp = setups["mnist_mlp"].model
    assert (mlp.width, mlp.depth, mlp.activation) == (100, 2, "ReLU")
    for r in RECORD_IDS[:4]:
        assert setups[r].dataset.augment.crop_padding == 4 and setups[r].dataset.augment.flip
    sgd_m = setups["mnist_mlp"].optimizer  # the default lr_grid
    assert (sgd_m.momentum, sgd_m.dampening) == (0.9, 0.9)


def test_vgg16_record_head_is_512_512_10_with_dropout():
    head = list(vgg16_bn((3, 32, 32), 10, hidden=[512, 512], dropout=0.5))[-8:]
    assert [type(m).__name__ for m in head] == [
        "Flatten", "Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Linear"]
    assert [m.out_features for m in head if isinstance(m, torch.nn.Linear)] == [512, 512, 10]


def test_init_seed_fixes_the_initial_weights_and_seed_the_data_order(tmp_path):
    """lr 0 keeps the initial weights: equal for two seeds with one init_seed, not without."""
    base = ["debug=fast", "device=cpu", "optimizer=sgd", "optimizer.lr=0", "averaging=none",
            "logger=none", "trainer.progress=false"]
    weights, losses = {}, {}
    for tag, extra in {"a": ["init_seed=3", "seed=0"], "b": ["init_seed=3", "seed=1"],
                       "c": ["seed=1"]}.items():
        run(compose_train([*base, *extra]), tmp_path / tag)
        weights[tag] = torch.load(tmp_path / tag / "checkpoint.pt", weights_only=True)["model"]
        losses[tag] = [json.loads(line)["train_loss"]
                       for line in (tmp_path / tag / "steps.jsonl").read_text().splitlines()]
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert not all(torch.equal(weights["b"][k], weights["c"][k]) for k in weights["b"])
    assert losses["a"] != losses["b"]  # same weights, different batches


def test_bad_init_seed_and_val_split_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="init_seed=-1"):
        run(compose_train(["debug=fast", "device=cpu", "init_seed=-1"]), tmp_path / "a")
    with pytest.raises(ConfigError, match=r"dataset\.val_split=dev"):
        run(compose_train(["debug=fast", "device=cpu", "dataset.val_split=dev"]), tmp_path / "b")
