"""One process per run directory: an exclusive lock file that also works on shared file systems.

The lock is `<run dir>/run.lock`, created with O_CREAT | O_EXCL (atomic on local disks and on
NFSv3+, Lustre and GPFS, where POSIX locks may be disabled) and holding its owner as JSON: host,
pid, the pid's start time, the batch job (SLURM) and the command. While the owner runs, a thread
touches the file every HEARTBEAT_S seconds. A lock is stale, and is taken over, when
- its owner runs on this host and that process is gone (or the pid now names another process);
- its owner ran on another host in the same batch job (a SLURM job requeued onto a new node);
- its owner runs on another host and has not touched the file for STALE_S seconds.
Taking over is serialised by a second O_EXCL file, so two processes never both break one lock.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

LOCK = "run.lock"
# Seconds a job waits for a run directory that another process holds (tune.yaml sets it: two
# trials with the same parameters share one run, and the second reuses the first's result).
LOCK_WAIT_ENV = "TRAINKIT_LOCK_WAIT_S"
HEARTBEAT_S = 30.0
STALE_S = 180.0  # > HEARTBEAT_S plus NFS attribute caching (up to 60 s) and clock skew
_BREAKER_STALE_S = 30.0  # a take-over that took longer than this died half-way


class RunDirBusy(Exception):
    """Another live process holds the run directory."""

    def __init__(self, run_dir: Path, owner: dict[str, Any]) -> None:
        self.run_dir, self.owner = run_dir, owner
        since = owner.get("since", "?")
        super().__init__(
            f"{run_dir} is in use by pid {owner.get('pid', '?')} on {owner.get('host', '?')} "
            f"(since {since}): wait for it to finish, or stop that process and run the command "
            f"again to resume")


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return start is None or _start_time(pid) in (None, start)


def batch_job() -> str | None:
    """The SLURM job this process belongs to, as squeue and sacct name it (an array's task:
    <array job>_<task>), if any."""
    job = os.environ.get("SLURM_JOB_ID")
    if job is None:
        return None
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else job


def gone_from_this_host(owner: dict[str, Any]) -> bool:
    """True if `owner` (as this_owner wrote it) is a process of this host that no longer runs
    (or whose pid now names another process). False for another host's process: only its
    silence tells."""
    return (owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int)
            and not _alive(owner["pid"], owner.get("start")))


def this_owner() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _start_time(pid),
            "job": batch_job(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)[:500]}


class RunLock:
    """Hold `<run_dir>/run.lock` for a `with` block; RunDirBusy if a live process holds it.

    wait_s: how long to wait for a busy directory before giving up (0: give up at once).
    """

    def __init__(self, run_dir: Path, wait_s: float = 0.0) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK
        self.wait_s = wait_s
        self._content: bytes | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_s
        content = json.dumps(this_owner()).encode()
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner, seen = self._read()
                if seen is not None and self._is_stale(owner, seen):
                    self._break(seen)
                    continue
                if time.monotonic() < deadline:
                    time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                    continue
                raise RunDirBusy(self.run_dir, owner) from None
            try:
                os.write(fd, content)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._content = content
            self._beat = threading.Thread(target=self._heartbeat, name="run-lock-heartbeat",
                                          daemon=True)
            self._beat.start()
            return

    def release(self) -> None:
        if self._content is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        try:
            if self.path.read_bytes() == self._content:  # never remove a lock that is not ours
                self.path.unlink()
        except FileNotFoundError:
            pass
        self._content = None

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def _read(self) -> tuple[dict[str, Any], bytes | None]:
        """(owner, raw content) of the current lock; raw None if it vanished meanwhile."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}, None
        try:
            owner = json.loads(raw)
        except ValueError:
            owner = {}
        return (owner if isinstance(owner, dict) else {}), raw

    def _age(self, path: Path) -> float:
        try:
            return time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def _is_stale(self, owner: dict[str, Any], raw: bytes) -> bool:
        if not owner:  # being written this instant, or a foreign file: judge by its age
            return self._age(self.path) > STALE_S
        if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
            return gone_from_this_host(owner)
        job = batch_job()
        if job is not None and owner.get("job") == job:  # requeued onto another node
            return True
        return self._age(self.path) > STALE_S

    def _break(self, seen: bytes) -> None:
        """Remove the stale lock whose content was `seen`, unless someone already replaced it."""
        breaker = self.path.with_name(LOCK + ".break")
        try:
            fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if self._age(breaker) > _BREAKER_STALE_S:
                breaker.unlink(missing_ok=True)
            else:
                time.sleep(0.1)
            return
        os.close(fd)
        try:
            if self.path.read_bytes() == seen:
                self.path.unlink()
        except FileNotFoundError:
            pass
        finally:
            breaker.unlink(missing_ok=True)
