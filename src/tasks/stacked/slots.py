"""Continuous batching of stacked runs: a queue of compatible jobs and an engine with `slots`
places; a job takes a free place the moment one frees, so the places stay full until the queue
drains.

Each job is an ordinary run: its own run-directory lock (held while it has a place), its own
lifecycle (reuse, resume, records, summary; src/lifecycle/run.py). A job whose directory another
process holds waits in the queue (others go first) for up to `lock_wait_s`, then is reported
busy. A run keeps the place it first took across restarts (`<run dir>/stack.json`): the last
bits of some batched kernels depend on a slot's position, so a resumed stack repeats the
uninterrupted one exactly.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig
from tqdm import tqdm

from src.core.errors import one_line
from src.core.files import read_json, write_json_atomic
from src.lifecycle.lock import RunDirBusy, RunLock
from src.lifecycle.record import JobRecord, logging_for
from src.lifecycle.run import Lifecycle, Outcome, Result, Task

log = logging.getLogger(__name__)

PLACE = "stack.json"  # the place a run took in its stack: {"slot": k, "slots": K}


@dataclass
class StackJob:
    """One job of a stacked sweep: its config, run directory and Hydra record."""

    cfg: DictConfig
    run_dir: Path
    record: JobRecord | None = None
    name: str = ""  # how the progress lines name it (the sweep's job number)


@dataclass
class Member:
    """A job in a place: its lifecycle and its task (the engine keeps its own per-slot state)."""

    index: int  # the job's place in the queue
    job: StackJob
    life: Lifecycle
    task: Task
    lock: RunLock


class Engine(Protocol):
    """What trains the members (src/tasks/stacked/classify.py, regimes.py)."""

    slots: int

    def admit(self, slot: int, member: Member) -> None:
        """Take `member` (built and resumed by its lifecycle) into place `slot`."""

    def advance(self) -> list[tuple[int, Outcome | BaseException]]:
        """Train every member a little; returns the places whose runs ended, with how."""

    def vacate(self, slot: int) -> None:
        """Free place `slot` (its member ended)."""


@dataclass
class Occupancy:
    """Place-steps used by runs over place-steps offered, over the whole stack and while jobs
    were still waiting (before the last `slots` runs)."""

    used: float = 0.0
    offered: float = 0.0
    used_queued: float = 0.0
    offered_queued: float = 0.0

    def add(self, active: int, slots: int, queued: bool, steps: int = 1) -> None:
        self.used += active * steps
        self.offered += slots * steps
        if queued:
            self.used_queued += active * steps
            self.offered_queued += slots * steps

    def share(self, queued: bool = False) -> float:
        used, offered = ((self.used_queued, self.offered_queued) if queued
                         else (self.used, self.offered))
        return used / offered if offered else math.nan


@dataclass
class StackReport:
    """What a stacked group did: every job's result (or error), the occupancy, the time."""

    slots: int
    step: str = "eager"  # how the engine steps: eager or compiled
    outcomes: dict[int, Result | BaseException] = field(default_factory=dict)
    occupancy: Occupancy = field(default_factory=Occupancy)
    wall_s: float = 0.0


class Slots:
    """Runs `jobs` through an engine of `slots` places (see the module docstring).

    lifecycle(job): the job's Lifecycle; build(job, ckpt): its task (Lifecycle.begin's build);
    engine(): a fresh engine (made again if one fails as a whole).
    """

    def __init__(self, jobs: list[StackJob], slots: int,
                 lifecycle: Callable[[StackJob], Lifecycle],
                 build: Callable[[StackJob, dict | None], Task],
                 engine: Callable[[], Engine], lock_wait_s: float = 0.0,
                 label: str = "stacked") -> None:
        self.jobs, self.slots = jobs, slots
        self.lifecycle, self.build, self.make_engine = lifecycle, build, engine
        self.lock_wait_s, self.label = lock_wait_s, label
        self.report = StackReport(slots)
        self.members: list[Member | None] = [None] * slots
        self.retry_at = 0.0  # when jobs waiting for a held directory are tried again

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> StackReport:
        t0 = time.perf_counter()
        pending = deque(range(len(self.jobs)))
        busy_since: dict[int, float] = {}
        engine = self.make_engine()
        shown = sys.stderr.isatty()
        self.bar = tqdm(total=len(self.jobs), unit="run", desc=self.label, disable=not shown,
                        dynamic_ncols=True, leave=False)
        try:
            with self.bar, logging_for(None):
                while True:
                    self.fill(engine, pending, busy_since)
                    active = sum(m is not None for m in self.members)
                    if not active:
                        if not pending:
                            break
                        time.sleep(0.5)  # every waiting job's directory is held elsewhere
                        continue
                    try:
                        ended = engine.advance()
                    except Exception as e:  # the engine failed as a whole: its members fail
                        log.exception("the stack failed")
                        ended = [(k, e) for k, m in enumerate(self.members) if m is not None]
                        self.close(engine, ended)
                        engine = self.make_engine()
                        continue
                    self.report.occupancy.add(active, self.slots, queued=bool(pending))
                    if ended:
                        self.close(engine, ended)
                        self.progress(len(pending), time.perf_counter() - t0)
        except BaseException as e:  # Ctrl-C: every run in a place records why it stopped
            self.close(engine, [(k, e) for k, m in enumerate(self.members) if m is not None])
            raise
        self.report.wall_s = time.perf_counter() - t0
        return self.report

    def fill(self, engine: Engine, pending: deque[int], busy_since: dict[int, float]) -> None:
        """Give every free place to a waiting job (a run goes back to the place it had). Jobs
        whose directories other processes hold are tried again twice a second, not every step."""
        free = [k for k, m in enumerate(self.members) if m is None]
        if not free or not pending:
            return
        if time.monotonic() < self.retry_at and all(i in busy_since for i in pending):
            return
        waiting = list(pending)
        pending.clear()
        homes = {i: self.home(self.jobs[i]) for i in waiting}
        # runs with a place of their own first, then the queue in order
        for i in sorted(waiting, key=lambda i: homes[i] is None):
            free = [k for k, m in enumerate(self.members) if m is None]
            home = homes[i]
            slot = home if home in free else (free[0] if free else None)
            if slot is None:
                pending.append(i)
                continue
            job = self.jobs[i]
            lock = RunLock(job.run_dir)
            try:
                job.run_dir.mkdir(parents=True, exist_ok=True)
                lock.acquire()
            except RunDirBusy as e:
                since = busy_since.setdefault(i, time.monotonic())
                if time.monotonic() - since < self.lock_wait_s:
                    pending.append(i)
                else:
                    self.done(i, e)
                continue
            except OSError as e:  # a folder it cannot write
                self.done(i, e)
                continue
            busy_since.pop(i, None)
            self.enter(engine, i, slot, lock)
        self.retry_at = time.monotonic() + 0.5

    def enter(self, engine: Engine, i: int, slot: int, lock: RunLock) -> None:
        job = self.jobs[i]
        try:
            with logging_for(job.run_dir):
                life = self.lifecycle(job)
                task = life.begin(lambda ckpt: self.build(job, ckpt))
                if task is not None:
                    member = Member(i, job, life, task, lock)
                    try:
                        engine.admit(slot, member)
                    except BaseException as e:
                        life.abort(task, e)
                        raise
        except Exception as e:  # a bad setting or checkpoint: this job alone fails
            lock.release()
            self.done(i, e)
            return
        if task is None:  # finished before: reused
            lock.release()
            self.done(i, life.reused)
            return
        self.members[slot] = member
        write_json_atomic(job.run_dir / PLACE, {"slot": slot, "slots": self.slots})

    def close(self, engine: Engine, ended: list[tuple[int, Outcome | BaseException]]) -> None:
        """End the runs of these places: summary, lock, the place freed."""
        for slot, how in ended:
            member = self.members[slot]
            assert member is not None
            i = member.index
            try:
                with logging_for(member.job.run_dir):
                    if isinstance(how, BaseException):
                        member.life.abort(member.task, how)
                        result: Result | BaseException = how
                    else:
                        result = member.life.end(member.task, how)
            except Exception as e:  # writing the summary failed (a full disk)
                result = e
            finally:
                member.lock.release()
                self.members[slot] = None
                engine.vacate(slot)
            self.done(i, result)

    def done(self, i: int, result: Result | BaseException) -> None:
        self.report.outcomes[i] = result
        job = self.jobs[i]
        if job.record is not None:  # its log file
            job.record.close()
        if isinstance(result, BaseException):
            status = "busy" if isinstance(result, RunDirBusy) else "failed"
            what = one_line(result)
        else:
            status = result.summary.get("status", "completed")
            what = "reused" if result.reused else f"objective {result.objective}"
        log.info("%s: %s %s in %s (%s)", self.label, job.name, status, job.run_dir, what)
        self.bar.update(1)

    def progress(self, pending: int, elapsed: float) -> None:
        done = len(self.report.outcomes)
        running = sum(m is not None for m in self.members)
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (pending + running) / rate if rate > 0 else math.nan
        line = (f"{done} done, {running} running, {pending} pending, slots "
                f"{100 * self.report.occupancy.share():.0f}% full, ETA {format_s(eta)}")
        self.bar.set_postfix_str(line)
        if not self.bar.disable:
            return
        log.info("%s: %s", self.label, line)

    @staticmethod
    def home(job: StackJob) -> int | None:
        """The place this run took before (stack.json), if it has not finished."""
        path = job.run_dir / PLACE
        if not path.exists():
            return None
        try:
            place: dict[str, Any] = read_json(path)
        except Exception:  # someone else's file: the run just takes a free place
            return None
        slot = place.get("slot")
        return slot if isinstance(slot, int) else None


def format_s(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 \
        else f"{seconds // 60}m{seconds % 60:02d}s"
