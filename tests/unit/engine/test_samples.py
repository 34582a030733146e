"""Per-sample correctness (trainer.track_samples): the bit-packed record, killed and resumed
runs, files damaged or from another run, and the four per-sample figure kinds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from src.analysis.figures.samples import rate_bins
from src.core.errors import UserError
from src.engine.samples import (
    FOLDER,
    INDEX,
    SampleRecorder,
    SampleRecordError,
    bits_name,
    read_samples,
)
from tests.helpers.runs import compose_train

MODELS = ["model", "ema_0.9"]
SPLITS = {"val": 13, "test": 8}  # not multiples of 8: the last byte of a row is partial


def rows(seed: int, epochs: int) -> list[dict[tuple[str, str], torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [{(m, s): torch.rand(n, generator=gen) > 0.5 for m in MODELS
             for s, n in SPLITS.items()} for _ in range(epochs)]


def test_rows_come_back_bit_for_bit(tmp_path):
    recorder = SampleRecorder(tmp_path, MODELS, SPLITS, resume_epoch=0)
    written = rows(0, 5)
    for epoch in written:
        recorder.append(epoch)
    record = read_samples(tmp_path)
    assert record.epochs.tolist() == [1, 2, 3, 4, 5] and record.models == MODELS
    for key in written[0]:
        expected = np.stack([e[key].numpy() for e in written])
        assert np.array_equal(record.correct[key], expected)
    assert (tmp_path / FOLDER / bits_name("model", "val")).stat().st_size == 5 * 2  # 13 bits
    assert not list((tmp_path / FOLDER).glob("*.pkl"))


def test_a_killed_epochs_rows_are_cut_off_and_a_resume_goes_back_to_its_checkpoint(tmp_path):
    recorder = SampleRecorder(tmp_path, MODELS, SPLITS, resume_epoch=0)
    written = rows(1, 4)
    for epoch in written[:3]:
        recorder.append(epoch)
    # killed after appending epoch 4's bits to one file, before the index said so
    with open(tmp_path / FOLDER / bits_name("model", "val"), "ab") as f:
        f.write(b"\xff\xff")
    assert read_samples(tmp_path).epochs.tolist() == [1, 2, 3]  # the index is the truth
    # the process restarts from its checkpoint of epoch 2: epoch 3 is trained again
    again = SampleRecorder(tmp_path, MODELS, SPLITS, resume_epoch=2)
    assert read_samples(tmp_path).epochs.tolist() == [1, 2]
    again.append(written[3])
    record = read_samples(tmp_path)
    assert record.epochs.tolist() == [1, 2, 3]
    assert np.array_equal(record.correct[("model", "val")][2], written[3][("model", "val")])
    assert (tmp_path / FOLDER / bits_name("model", "val")).stat().st_size == 3 * 2


def test_recording_started_on_a_resumed_run_numbers_its_epochs(tmp_path):
    recorder = SampleRecorder(tmp_path, MODELS, SPLITS, resume_epoch=7)
    recorder.append(rows(2, 1)[0])
    assert read_samples(tmp_path).epochs.tolist() == [8]


def test_another_runs_record_and_damaged_files_are_one_line(tmp_path):
    SampleRecorder(tmp_path, MODELS, SPLITS, resume_epoch=0).append(rows(3, 1)[0])
    with pytest.raises(UserError, match=r"delete .*samples to record afresh"):
        SampleRecorder(tmp_path, ["model"], SPLITS, resume_epoch=1)
    (tmp_path / FOLDER / bits_name("ema_0.9", "test")).write_bytes(b"")
    with pytest.raises(SampleRecordError, match="holds 0 bytes, its index says 1 epochs"):
        read_samples(tmp_path)
    (tmp_path / FOLDER / INDEX).write_text('{"format": 1, "models": "model"')
    with pytest.raises(SampleRecordError, match="is not a samples index") as info:
        read_samples(tmp_path)
    assert "\n" not in str(info.value)
    assert read_samples(tmp_path / "elsewhere") is None


def test_rate_bins_centre_every_share_of_few_epochs():
    class Rec:
        epochs = np.arange(1, 5)

    bins = rate_bins([(None, Rec())])
    counts, _ = np.histogram(np.arange(5) / 4, bins=bins)
    assert counts.tolist() == [1, 1, 1, 1, 1]


def test_the_preset_is_the_seeds_per_sample_study():
    cfg = compose_train(["experiment=ema_resnet20_cifar10_samples"])
    assert cfg.trainer.track_samples and list(cfg.trainer.track_splits) == ["val", "test"]
    assert cfg.model._target_.endswith("resnet20") and cfg.dataset.name == "cifar10"
    assert cfg.epochs == 180 and list(cfg.averaging.decays) == [0.9995]
    assert cfg.scheduler._target_.endswith("constant")
