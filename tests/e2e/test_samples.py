"""Per-sample correctness (trainer.track_samples): the bit-packed record, killed and resumed
runs, files damaged or from another run, and the four per-sample figure kinds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from src.engine.samples import (
    FOLDER,
    read_samples,
)
from tests.helpers.datafiles import write_cifar10
from tests.helpers.runs import SMALL_FAKE, run_script, summary, train


def tracked_run(run_dir: Path, *extra: str) -> None:
    train(run_dir, *SMALL_FAKE, "epochs=3", "model=mlp", "averaging.decays=[0.9]",
          "trainer.track_samples=true", "trainer.track_splits=[train,val,test]", *extra)


def test_a_tracked_run_agrees_with_its_own_history_and_summary(tmp_path):
    tracked_run(tmp_path)
    record = read_samples(tmp_path)
    history = [json.loads(x) for x in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert record.epochs.tolist() == [1, 2, 3]
    assert record.splits == {"train": 500, "val": 100, "test": 200}
    for model, prefix in (("model", ""), ("ema_0.9", "ema_0.9/")):
        per_epoch = record.correct[(model, "val")].mean(axis=1)
        assert per_epoch.tolist() == pytest.approx([h[f"{prefix}val_acc"] for h in history])
        final = summary(tmp_path)["metrics"]
        assert record.correct[(model, "test")][-1].mean() == pytest.approx(
            final[f"{prefix}test_acc"])
        assert record.correct[(model, "train")][-1].mean() == pytest.approx(
            final[f"{prefix}train_acc"])
    assert all(h["track_samples_s"] > 0 for h in history)


def test_tracking_leaves_the_training_and_its_digest_unchanged(tmp_path):
    plain, tracked = tmp_path / "plain", tmp_path / "tracked"
    train(plain, *SMALL_FAKE, "epochs=2", "model=mlp")
    train(tracked, *SMALL_FAKE, "epochs=2", "model=mlp", "trainer.track_samples=true")
    a, b = summary(plain), summary(tracked)
    assert a["metrics"] == b["metrics"] and a["config_digest"] == b["config_digest"]


def test_a_bad_split_is_one_line(tmp_path):
    proc = run_script("train.py", [*SMALL_FAKE, "trainer.track_samples=true",
                                   "trainer.track_splits=[validation]",
                                   f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "trainer.track_splits=['validation']: use one or more of train, val, test" in (
        proc.stderr)
    assert not (tmp_path / "run" / FOLDER).exists()


# -- the figures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Two seeds of a tracked run, an untracked run and a run without an EMA."""
    root = tmp_path_factory.mktemp("samples")
    for seed in (0, 1):
        tracked_run(root / f"seed={seed}", f"seed={seed}")
    train(root / "untracked", *SMALL_FAKE, "epochs=2", "model=mlp", "averaging.decays=[0.9]")
    return root


def draw(folder: Path, out: Path, *args: str):
    return run_script("plots.py", [f"runs={folder}/*", *args, f"out_dir={out}"])


def sidecar(out: Path, stem: str) -> dict:
    return json.loads((out / f"{stem}.json").read_text())


def test_flips_are_the_records_own_and_untracked_runs_are_named(folder, tmp_path):
    proc = draw(folder, tmp_path, "figure=sample_flips")
    assert proc.returncode == 0, proc.stderr
    assert "left out 1 run(s), no per-sample record" in proc.stdout and "untracked" in proc.stdout
    data = sidecar(tmp_path, "sample_flips")
    assert data["width_in"] == 7.0
    (val,) = [s for s in data["series"] if s["split"] == "val"]
    assert len(val["runs"]) == 2  # the two seeds pooled
    records = [read_samples(folder / f"seed={s}") for s in (0, 1)]
    flips = [np.mean(r.correct[("model", "val")][1:] != r.correct[("model", "val")][:-1],
                     axis=1) * 100 for r in records]
    assert val["flipped_percent"]["model"]["mean"] == pytest.approx(np.mean(flips, axis=0))
    assert val["flipped_percent"]["model"]["epoch"] == [2, 3]
    assert set(val["flipped_percent"]) == {"model", "ema_0.9"}


def test_disagreement_and_error_rates_count_every_sample(folder, tmp_path):
    for kind in ("sample_disagreement", "sample_error_rates"):
        proc = draw(folder, tmp_path, f"figure={kind}")
        assert proc.returncode == 0, proc.stderr
        data = sidecar(tmp_path, kind)
        for series in data["series"]:
            for share in series["share_percent"].values():
                assert sum(share) == pytest.approx(100.0)  # every sample in one bin
    data = sidecar(tmp_path, "sample_disagreement")
    assert all(set(s["share_percent"]) == {"ema_0.9"} for s in data["series"])


def test_the_barcode_shows_the_least_stable_samples_with_their_images(folder, tmp_path):
    proc = draw(folder, tmp_path, "figure=sample_barcode", "metric=test")
    assert proc.returncode == 0, proc.stderr
    files = sorted(tmp_path.glob("sample_barcode_test_*.json"))
    assert len(files) == 2  # one per tracked run
    data = json.loads(files[0].read_text())
    record = read_samples(folder / "seed=0")
    model = next(s for s in data["series"] if s["label"] == "model")
    flips = np.abs(np.diff(record.correct[("model", "test")].astype(int), axis=0)).sum(axis=0)
    unstable = sorted(flips[flips > 0], reverse=True)[:30]  # never-flipped samples are not shown
    assert [flips[i] for i in model["samples"]] == unstable and len(unstable) > 0
    assert np.array_equal(np.array(model["correct"]),
                          record.correct[("model", "test")][:, model["samples"]].T)
    assert "images left out" not in proc.stdout  # fake data are images, rebuilt from config


def test_barcode_images_come_from_the_runs_dataset_or_a_reason_is_given(tmp_path):
    data = tmp_path / "data"
    write_cifar10(data, per_batch=8)  # 40 training and 8 test images
    run = tmp_path / "runs" / "cifar"
    train(run, "dataset=cifar10", f"data_dir={data}", "dataset.val_size=8", "batch_size=4",
          "epochs=4", "model=mlp", "trainer.track_samples=true",
          "trainer.track_splits=[train,val,test]")
    proc = draw(tmp_path / "runs", tmp_path / "out", "figure=sample_barcode", "metric=train")
    assert proc.returncode == 0, proc.stderr
    assert "images left out" not in proc.stdout
    shutil.rmtree(data)  # the figure is drawn elsewhere, without the dataset
    proc = draw(tmp_path / "runs", tmp_path / "again", "figure=sample_barcode", "metric=train")
    assert proc.returncode == 0, proc.stderr
    assert "cifar: images left out (cifar10 not found in" in proc.stdout
    assert list((tmp_path / "again").glob("sample_barcode_train_cifar.png"))


@pytest.mark.parametrize("args,message", [
    (["figure=sample_flips", "runs={folder}/untracked"], "trainer.track_samples=true"),
    (["figure=sample_barcode", "metric=val_acc"], "metric names the split"),
])
def test_nothing_to_draw_is_one_line(folder, tmp_path, args, message):
    args = [a.format(folder=folder) for a in args]
    proc = run_script("plots.py", [*(a for a in args if a.startswith("figure") or
                                     a.startswith("metric")),
                                   next((a for a in args if a.startswith("runs=")),
                                        f"runs={folder}/*"), f"out_dir={tmp_path}"])
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr
    assert not list(tmp_path.glob("*.png"))
