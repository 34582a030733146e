"""logger=mlflow: one MLflow run per run, in the experiment named after its sweep.

The default store is a SQLite file under outputs/ (`mlflow ui --backend-store-uri
sqlite:///outputs/mlflow/mlflow.db` browses it), with the runs' files beside it in
outputs/mlflow/artifacts; `logger.mlflow.tracking_uri=http://host:5000` logs to a server.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from src.core.errors import UserError, one_line
from src.lifecycle.trackers import (
    Marks,
    Point,
    TrackedRun,
    Tracker,
    finite,
    keep_id,
    missing_package,
    tracker_ids,
    writable,
)

log = logging.getLogger(__name__)

# MLflow's run statuses for ours: a pruned or interrupted run was stopped, not failed
RUN_STATUS = {"completed": "FINISHED", "diverged": "FAILED", "failed": "FAILED",
              "pruned": "KILLED", "interrupted": "KILLED"}
SQLITE = "sqlite:///"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (relative paths from the working directory)."""
    return Path(uri[len(SQLITE):]).resolve() if uri.startswith(SQLITE) else None


@contextmanager
def store_lock(db: Path | None) -> Iterator[None]:
    """Processes starting together on one SQLite file create its tables and experiments one at a
    time (MLflow's migrations are not safe to run twice at once)."""
    if db is None:
        yield
        return
    with open(db.with_name(db.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, run: TrackedRun, options: dict[str, Any]) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise missing_package("mlflow", "mlflow") from None
        self.run = run
        uri = str(options.get("tracking_uri") or "")
        self.experiment = str(options.get("experiment") or run.group)
        db = sqlite_path(uri)
        setting = f"logger.mlflow.tracking_uri={uri}"
        # a server that does not answer fails in seconds, not after MLflow's minutes of retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        try:
            if db is not None:
                uri = SQLITE + str(db)
                writable(db.parent)
                db.parent.mkdir(parents=True, exist_ok=True)
            with store_lock(db):
                self.client = MlflowClient(tracking_uri=uri)
                self.experiment_id = self.experiment_of(db, options)
        except UserError:
            raise
        except Exception as e:  # a bad URI, a server that does not answer, a read-only store
            raise UserError(f"{setting}: MLflow cannot use this store ({one_line(e)}): give a "
                            f"sqlite:///<file> in a writable folder or a server's http(s):// "
                            f"address") from None
        self.uri, self.run_id, self.marks = uri, None, Marks()

    def experiment_of(self, db: Path | None, options: dict[str, Any]) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        location = options.get("artifact_location")
        if location is None and db is not None:  # the runs' files beside the store
            location = str(db.parent / "artifacts")
        if location is not None:
            location = str(Path(location).resolve() / self.experiment.replace("/", "_"))
        return self.client.create_experiment(self.experiment, artifact_location=location)

    def start(self, step: int, kept: list[Point]) -> None:
        earlier = tracker_ids(self.run.run_dir).get(self.name, {})
        if earlier.get("tracking_uri") == self.uri and self.resume(earlier["run_id"]):
            log.info("MLflow: continuing run %s of experiment %s", self.run_id, self.experiment)
        else:
            tags = {**self.run.tags, "mlflow.runName": self.run.name}
            self.run_id = self.client.create_run(self.experiment_id, tags=tags,
                                                 run_name=self.run.name).info.run_id
            keep_id(self.run.run_dir, self.name, {"tracking_uri": self.uri, "run_id": self.run_id,
                                                  "experiment": self.experiment})
            self.log_params()
            log.info("MLflow: run %s in experiment '%s' of %s", self.run_id, self.experiment,
                     self.uri)
        for at, values in kept:
            self.log(values, at)

    def resume(self, run_id: str) -> bool:
        """Continue `run_id` (marks: what its store holds already); False if the store lost it."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.get_run(run_id)
        except MlflowException:
            log.warning("MLflow: run %s is not in %s any more: a new run starts", run_id,
                        self.uri)
            return False
        self.run_id = run_id
        self.marks = Marks({key: max(m.step for m in self.client.get_metric_history(run_id, key))
                            for key in found.data.metrics})
        self.client.update_run(run_id, status="RUNNING")
        return True

    def log_params(self) -> None:
        from mlflow.entities import Param

        params = [Param(k, str(v)[:6000]) for k, v in self.run.params.items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        fresh = self.marks.new(finite(values), step)
        if fresh:
            now = int(time.time() * 1000)
            self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step)
                                                        for k, v in fresh.items()])

    def finish(self, status: str, metrics: dict[str, float], files: list[Path]) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, 0)
                                                    for k, v in finite(metrics).items()],
                              tags=[RunTag("status", status)])
        for path in files:
            if path.exists():
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, RUN_STATUS.get(status, "FAILED"))
        self.run_id = None

    def close(self) -> None:
        if self.run_id is not None:  # stopped without finishing (an error in the trainer)
            self.client.set_terminated(self.run_id, "FAILED")
            self.run_id = None
