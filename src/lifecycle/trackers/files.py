"""The trackers that write into the run directory: TensorBoard events (tb/) and CSV (csv/)."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

from src.core.files import CSV_DIR, TENSORBOARD
from src.lifecycle.trackers import Point, TrackedRun, Tracker, finite, missing_package

# TensorBoard's session statuses are success, failure, running and unknown (no "aborted"): a
# pruned or interrupted run is neither a success nor a failure, and its `status` hparam says which.
SESSION_STATUS = {"completed": "STATUS_SUCCESS", "diverged": "STATUS_FAILURE",
                  "failed": "STATUS_FAILURE", "pruned": "STATUS_UNKNOWN",
                  "interrupted": "STATUS_UNKNOWN"}


def session_end(status: str) -> Any:
    """TensorBoard's end-of-session record with the run's real status (torch's add_hparams
    always writes success)."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.metadata import (
        PLUGIN_DATA_VERSION,
        PLUGIN_NAME,
        SESSION_END_INFO_TAG,
    )
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo

    value = SESSION_STATUS.get(status, "STATUS_FAILURE")
    content = HParamsPluginData(session_end_info=SessionEndInfo(status=Status.Value(value)),
                                version=PLUGIN_DATA_VERSION)
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
        plugin_name=PLUGIN_NAME, content=content.SerializeToString()))
    return Summary(value=[Summary.Value(tag=SESSION_END_INFO_TAG, metadata=meta)])


class TensorBoardTracker(Tracker):
    """Scalars, and the HPARAMS tab's entry (hyperparameters, `hparam/<metric>`, status), in
    <run>/tb. A resumed run purges the events past its checkpoint's step."""

    name = "tensorboard"

    def __init__(self, run: TrackedRun, options: dict[str, Any]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise missing_package("tensorboard", "tensorboard") from None
        self.run, self.writer_class, self.writer = run, SummaryWriter, None

    def start(self, step: int, kept: list[Point]) -> None:
        # the points at the checkpoint's step were logged before it was written: kept
        self.writer = self.writer_class(log_dir=str(self.run.run_dir / TENSORBOARD),
                                        purge_step=step + 1 if step else None)

    def log(self, values: dict[str, float], step: int) -> None:
        for tag, value in finite(values).items():
            self.writer.add_scalar(tag, value, step)

    def finish(self, status: str, metrics: dict[str, float], files: list[Path]) -> None:
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        hp = {**self.run.params, "status": status}
        mt = {f"hparam/{k}": v for k, v in finite(metrics).items()}
        experiment, start, _ = hparams_summaries(hp, mt)
        for summary in (experiment, start, session_end(status)):
            self.writer.file_writer.add_summary(summary)
        for tag, value in mt.items():
            self.writer.add_scalar(tag, value)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class CsvTracker(Tracker):
    """<run>/csv/metrics.csv: one row per logged record (`step`, then a column per scalar,
    empty where a record has no such value), rewritten to the kept records when the run resumes;
    <run>/csv/run.csv: one row (name, status, hyperparameters, final metrics), so that
    pandas.concat of a sweep's run.csv files is its table."""

    name = "csv"

    def __init__(self, run: TrackedRun, options: dict[str, Any]) -> None:
        self.run, self.dir = run, run.run_dir / CSV_DIR
        self.rows: list[dict[str, float]] = []
        self.columns: list[str] = ["step"]

    def start(self, step: int, kept: list[Point]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rows = [{"step": s, **finite(values)} for s, values in kept]
        self.columns = ["step", *dict.fromkeys(k for row in self.rows for k in row if k != "step")]
        self.rewrite()

    def rewrite(self) -> None:
        path = self.dir / "metrics.csv"
        tmp = path.with_name(f".metrics.csv.{os.getpid()}")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, path)

    def log(self, values: dict[str, float], step: int) -> None:
        row = {"step": step, **finite(values)}
        self.rows.append(row)
        if any(k not in self.columns for k in row):  # a new column: the header changes
            self.columns += [k for k in row if k not in self.columns]
            self.rewrite()
            return
        with open(self.dir / "metrics.csv", "a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow(row)

    def finish(self, status: str, metrics: dict[str, float], files: list[Path]) -> None:
        row: dict[str, Any] = {"name": self.run.name, "status": status, **self.run.params,
                               **{k: v for k, v in metrics.items()
                                  if not (isinstance(v, float) and not math.isfinite(v))}}
        with open(self.dir / "run.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, list(row))
            writer.writeheader()
            writer.writerow(row)
