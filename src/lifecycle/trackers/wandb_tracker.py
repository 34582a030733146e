"""logger=wandb: one W&B run per run, grouped by its sweep; offline by default.

Offline, a run's records go to <run>/wandb/offline-run-<time>-<id>/run-<id>.wandb (one folder per
start of the process: a resumed run adds a folder with the same id), and `wandb sync` uploads
them later, as one run. W&B reads nothing back from a server offline, so a resumed run asks its
own earlier files which points they hold (read_records)."""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import string
import struct
import time
import zlib
from collections.abc import Callable, Iterator
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

MODES = ("offline", "online", "disabled")
# The .wandb file: LevelDB's log format (32 KiB blocks of checksummed chunks) after a 7-byte
# header (":W&B", 0xBEE1, version 0); each record is a wandb_internal_pb2.Record.
BLOCK, CHUNK_HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> Iterator[Any]:
    """The records of one .wandb file, up to its end or to the first chunk that a killed process
    left unfinished (a bad checksum, a short chunk)."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        return
    crc = {t: zlib.crc32(bytes([t])) for t in (FULL, FIRST, MIDDLE, LAST)}
    at, pending = 7, b""
    while True:
        if BLOCK - at % BLOCK < CHUNK_HEADER:  # a block's tail too short for a chunk: padding
            at += BLOCK - at % BLOCK
        if at + CHUNK_HEADER > len(data):
            return
        checksum, length, kind = struct.unpack("<IHB", data[at:at + CHUNK_HEADER])
        chunk = data[at + CHUNK_HEADER:at + CHUNK_HEADER + length]
        at += CHUNK_HEADER + length
        if kind not in crc or len(chunk) < length or zlib.crc32(chunk, crc[kind]) != checksum:
            return
        if kind in (FIRST, MIDDLE):
            pending = (b"" if kind == FIRST else pending) + chunk
            continue
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending + chunk if kind == LAST else chunk)
        pending = b""
        yield record


def new_id() -> str:
    """A W&B run id: 8 characters of [a-z0-9], as W&B makes them."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def offline_files(folder: Path, run_id: str) -> list[Path]:
    """The .wandb files of run `run_id` under `folder`/wandb, oldest first."""
    return sorted((folder / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))


def history(path: Path) -> Iterator[dict[str, Any]]:
    """The history rows of a .wandb file, as {key: value} with W&B's `_step`."""
    for record in read_records(path):
        if record.WhichOneof("record_type") == "history":
            yield {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                   for item in record.history.item}


class WandbTracker(Tracker):
    name = "wandb"

    def __init__(self, run: TrackedRun, options: dict[str, Any]) -> None:
        try:
            import wandb
        except ImportError:
            raise missing_package("wandb", "wandb") from None
        self.wandb, self.run, self.options = wandb, run, options
        self.mode = str(options.get("mode") or "offline")
        if self.mode not in MODES:
            raise UserError(f"logger.wandb.mode={self.mode}: choose one of {', '.join(MODES)}")
        self.dir = Path(options.get("dir") or run.run_dir).resolve()
        try:
            writable(self.dir)
        except OSError as e:
            raise UserError(f"logger.wandb.dir={self.dir}: cannot write there ({e.strerror}): "
                            f"choose a writable folder (logger.wandb.dir=...)") from None
        self.handle = None

    def start(self, step: int, kept: list[Point]) -> None:
        earlier = tracker_ids(self.run.run_dir).get(self.name, {})
        run_id = earlier.get("id") or new_id()
        marks: dict[str, int] = {}
        for path in offline_files(self.dir, run_id) if earlier else []:
            for row in history(path):
                for key in row:
                    if not key.startswith("_"):
                        marks[key] = max(marks.get(key, -1), int(row["_step"]))
        if earlier:  # a new folder for this start: W&B names it by the second
            self.wait_for_a_new_second(run_id)
        else:
            keep_id(self.run.run_dir, self.name, {"id": run_id, "dir": str(self.dir),
                                                  "mode": self.mode})
        settings = self.wandb.Settings(mode=self.mode, console="off", silent=True,
                                       x_disable_stats=True, save_code=False, disable_git=True)
        group = str(self.options.get("group") or self.run.group)
        try:
            self.handle = self.wandb.init(
                project=self.options.get("project"), entity=self.options.get("entity"),
                group=group[:128], name=self.run.name, id=run_id, resume="allow",
                dir=str(self.dir), config={**self.run.params, **self.run.tags},
                tags=[str(t)[:64] for t in self.options.get("tags") or []],
                job_type=self.run.tags.get("job_type"), settings=settings, reinit="create_new")
        except Exception as e:  # no account online, a network that does not answer
            raise UserError(f"logger.wandb (mode {self.mode}): W&B could not start "
                            f"({one_line(e)}): logger.wandb.mode=offline needs no account") \
                from None
        if self.mode == "offline":
            log.info("W&B: offline run %s in %s; upload it with: wandb sync %s", run_id,
                     self.handle.dir, Path(self.handle.dir).parent)
        floor = -1
        if self.mode == "online" and self.handle.resumed:  # the server knows its last step
            floor = self.handle.step - 1
        self.marks = Marks(marks, floor)
        for at, values in kept:
            self.log(values, at)

    def wait_for_a_new_second(self, run_id: str) -> None:
        stamp = time.strftime("%Y%m%d_%H%M%S")
        if any(p.parent.name.startswith(f"offline-run-{stamp}")
               for p in offline_files(self.dir, run_id)):
            time.sleep(1.05 - time.time() % 1)

    def guarded(self, action: Callable[[Any], None]) -> None:
        """`action(handle)`, unless W&B's service has gone: a scheduler's signal (SLURM's
        SIGTERM at a preemption) reaches every process of the job, W&B's service included, and
        the run must still checkpoint and stop. Then this process logs no more to W&B; the run,
        resumed, logs what W&B's files lack."""
        if self.handle is None:
            return
        try:
            action(self.handle)
        except Exception as e:
            log.warning("W&B stopped answering (%s): this process logs no more to it; the "
                        "points it lacks are logged when the run resumes", one_line(e))
            self.handle = None

    def log(self, values: dict[str, float], step: int) -> None:
        fresh = self.marks.new(finite(values), step)
        if fresh:
            self.guarded(lambda handle: handle.log(fresh, step=step))

    def finish(self, status: str, metrics: dict[str, float], files: list[Path]) -> None:
        def end(handle: Any) -> None:
            handle.summary.update({**finite(metrics), "status": status})
            for path in files:  # copied into the W&B run's files (a link follows later edits)
                if path.exists():
                    copy = Path(handle.dir) / path.name
                    shutil.copyfile(path, copy)
                    handle.save(str(copy), base_path=handle.dir, policy="now")
            handle.finish(exit_code=0 if status in ("completed", "pruned") else 1)

        self.guarded(end)
        self.handle = None

    def close(self) -> None:
        self.guarded(lambda handle: handle.finish(exit_code=1))
        self.handle = None
