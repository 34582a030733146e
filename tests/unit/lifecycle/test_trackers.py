"""The trackers in process: the marks that keep a resumed run from logging a point twice, the
reader of W&B's offline files on files cut anywhere, the CSV files, MLflow's statuses and a
store that lost the run, and the checks before anything is written."""

from __future__ import annotations

import csv
import json
import struct
import zlib
from pathlib import Path

import pytest

from src.core.errors import UserError
from src.lifecycle.record import points
from src.lifecycle.trackers import (
    Logger,
    Marks,
    TrackedRun,
    keep_id,
    open_trackers,
    tracker_ids,
)
from src.lifecycle.trackers.files import CsvTracker
from src.lifecycle.trackers.mlflow_tracker import MlflowTracker
from src.lifecycle.trackers.wandb_tracker import BLOCK, history, read_records


def tracked(run_dir: Path, params: dict | None = None) -> TrackedRun:
    run_dir.mkdir(parents=True, exist_ok=True)
    return TrackedRun(run_dir, run_dir.name, "sweep", params or {"optimizer.lr": 0.1},
                      {"run_dir": str(run_dir)})


def test_marks_let_through_only_what_the_store_lacks():
    marks = Marks({"epoch/val_acc": 20})
    assert marks.new({"epoch/val_acc": 0.5, "step/train_loss": 1.0}, 20) == {"step/train_loss": 1.0}
    assert marks.new({"epoch/val_acc": 0.6}, 30) == {"epoch/val_acc": 0.6}
    assert marks.new({"epoch/val_acc": 0.6}, 30) == {}  # logged once, even if handed again
    assert Marks(floor=9).new({"a": 1.0, "b": 2.0}, 9) == {}


def test_points_put_a_log_interval_before_the_epoch_ending_at_its_step():
    steps = [{"step": 2, "train_loss": 1.0}, {"step": 4, "train_loss": 0.5, "note": "x"}]
    epochs = [{"step": 4, "epoch": 1, "val_acc": 0.7}]
    assert points(steps, epochs) == [(2, {"step/train_loss": 1.0}),
                                     (4, {"step/train_loss": 0.5}),
                                     (4, {"epoch/epoch": 1.0, "epoch/val_acc": 0.7})]


def wandb_file(path: Path, rows: list[dict]) -> bytes:
    """A .wandb file as W&B writes it: the header, then each record in checksummed chunks that
    never cross a 32 KiB block (long records are split FIRST, MIDDLE..., LAST)."""
    from wandb.proto import wandb_internal_pb2

    out = bytearray(b":W&B" + struct.pack("<HB", 0xBEE1, 0))
    for row in rows:
        record = wandb_internal_pb2.Record()
        for key, value in row.items():
            item = record.history.item.add()
            item.key, item.value_json = key, json.dumps(value)
        data, first = record.SerializeToString(), True
        while True:
            left = BLOCK - len(out) % BLOCK
            if left < 7:
                out += b"\0" * left
                left = BLOCK
            piece, data = data[:left - 7], data[left - 7:]
            kind = (1 if first else 4) if not data else (2 if first else 3)
            out += struct.pack("<IHB", zlib.crc32(piece, zlib.crc32(bytes([kind]))),
                               len(piece), kind) + piece
            first = False
            if not data:
                break
    path.write_bytes(bytes(out))
    return bytes(out)


def test_the_wandb_reader_reads_every_record_and_a_cut_file_up_to_its_cut(tmp_path):
    rows = [{"_step": i, "epoch/val_acc": i / 10, "pad": "x" * (40_000 if i == 3 else 10)}
            for i in range(8)]  # row 3 spans two blocks
    path = tmp_path / "run-x.wandb"
    data = wandb_file(path, rows)
    assert list(history(path)) == rows
    for cut in range(0, len(data), 997):  # a killed process leaves any prefix
        path.write_bytes(data[:cut])
        got = list(history(path))
        assert got == rows[:len(got)]
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF  # a damaged last chunk ends the reading there
    path.write_bytes(bytes(flipped))
    assert list(history(path)) == rows[:-1]
    path.write_bytes(b"not a wandb file")
    assert list(read_records(path)) == []


def test_csv_restarts_from_the_kept_records_and_grows_its_columns(tmp_path):
    run = tracked(tmp_path / "run")
    first = CsvTracker(run, {})
    first.start(0, [])
    first.log({"step/loss": 1.0}, 2)
    first.log({"step/loss": 0.5}, 4)
    first.log({"step/loss": 0.2}, 6)  # past the checkpoint: the process dies after it
    again = CsvTracker(run, {})
    again.start(4, [(2, {"step/loss": 1.0}), (4, {"step/loss": 0.5})])
    again.log({"step/loss": 0.25, "epoch/val_acc": 0.9}, 6)  # a new column: header rewritten
    again.finish("completed", {"val_acc": 0.9, "bad": float("nan")}, [])
    with open(run.run_dir / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["step/loss"], r["epoch/val_acc"]) for r in rows] == [
        ("2", "1.0", ""), ("4", "0.5", ""), ("6", "0.25", "0.9")]
    with open(run.run_dir / "csv" / "run.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row == {"name": "run", "status": "completed", "optimizer.lr": "0.1", "val_acc": "0.9"}


def store(tmp_path: Path) -> dict:
    return {"tracking_uri": f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"}


def test_mlflow_continues_its_run_and_says_how_each_run_ended(tmp_path):
    from mlflow.tracking import MlflowClient

    run = tracked(tmp_path / "run")
    first = MlflowTracker(run, store(tmp_path))
    first.start(0, [])
    first.log({"epoch/val_acc": 0.5}, 10)
    first.log({"epoch/val_acc": 0.6}, 20)  # logged, then the process dies before its checkpoint
    run_id = tracker_ids(run.run_dir)["mlflow"]["run_id"]

    again = MlflowTracker(run, store(tmp_path))
    again.start(10, [(10, {"epoch/val_acc": 0.5})])
    again.log({"epoch/val_acc": 0.6}, 20)  # retrained: already in the store
    again.log({"epoch/val_acc": 0.7}, 30)
    (run.run_dir / "summary.json").write_text("{}")
    again.finish("pruned", {"val_acc": 0.7, "bad": float("inf")}, [run.run_dir / "summary.json"])
    again.close()

    client = MlflowClient(tracking_uri=store(tmp_path)["tracking_uri"])
    (only,) = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    assert only.info.run_id == run_id
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "epoch/val_acc")] == \
        [(10, 0.5), (20, 0.6), (30, 0.7)]
    assert only.info.status == "KILLED" and only.data.tags["status"] == "pruned"
    assert only.data.metrics["val_acc"] == 0.7 and "bad" not in only.data.metrics
    assert [a.path for a in client.list_artifacts(run_id)] == ["summary.json"]
    assert only.info.artifact_uri.startswith(str(tmp_path / "store" / "artifacts"))


def test_mlflow_starts_a_new_run_where_its_store_lost_the_old_one(tmp_path, caplog):
    run = tracked(tmp_path / "run")
    uri = MlflowTracker(run, store(tmp_path)).uri
    keep_id(run.run_dir, "mlflow", {"tracking_uri": uri, "run_id": "0" * 32})  # not in the store
    again = MlflowTracker(run, store(tmp_path))
    again.start(10, [(10, {"epoch/val_acc": 0.5})])  # what the run kept goes to the new run
    new = tracker_ids(run.run_dir)["mlflow"]["run_id"]
    assert new != "0" * 32 and "is not in" in caplog.text
    assert [(m.step, m.value) for m in again.client.get_metric_history(new, "epoch/val_acc")] \
        == [(10, 0.5)]
    again.close()  # never finished: ended as failed
    assert again.client.get_run(new).info.status == "FAILED"


def test_an_unknown_tracker_is_refused_and_those_opened_before_are_closed(tmp_path, monkeypatch):
    closed = []
    monkeypatch.setattr(CsvTracker, "close", lambda self: closed.append(self), raising=False)
    logger = Logger({"csv": {}, "neptune": {}}, tracked(tmp_path / "run"))
    with pytest.raises(UserError, match=r"logger\.neptune: no such tracker"):
        open_trackers(logger)
    assert len(closed) == 1
    assert list((tmp_path / "run").iterdir()) == []  # opening writes nothing


def test_a_wandb_service_that_died_stops_the_logging_not_the_run(tmp_path, caplog):
    """SLURM's SIGTERM at a preemption reaches W&B's service too: the run must still reach its
    checkpoint and end (its points go to W&B when it resumes)."""
    from src.lifecycle.trackers.wandb_tracker import WandbTracker

    class Gone:
        dir = str(tmp_path)

        def log(self, *args, **kwargs):
            raise ConnectionResetError(104, "Connection reset by peer")

        finish = log

    tracker = WandbTracker(tracked(tmp_path / "run"), {})
    tracker.handle, tracker.marks = Gone(), Marks()
    tracker.log({"epoch/val_acc": 0.5}, 10)  # no exception: a warning, and W&B is left alone
    assert tracker.handle is None and "W&B stopped answering" in caplog.text
    tracker.log({"epoch/val_acc": 0.6}, 20)
    tracker.finish("interrupted", {}, [])
    tracker.close()
