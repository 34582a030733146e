"""The sweep layer as it fails in real use: killed and restarted, two processes at once, a bad job
next to good ones, a rejected command pointed at a finished run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from src.lifecycle import lock as lock_module
from src.lifecycle.lock import LOCK, RunDirBusy, RunLock

# -- the run-directory lock ------------------------------------------------------------------


def write_lock(run_dir: Path, owner: dict, age_s: float = 0.0) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    path.write_text(json.dumps(owner))
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


def test_a_live_owner_keeps_the_lock_and_a_dead_one_loses_it(tmp_path):
    with RunLock(tmp_path), pytest.raises(RunDirBusy, match=f"in use by pid {os.getpid()}"):
        RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK).exists()  # released
    dead = subprocess.Popen(["true"])
    dead.wait()
    write_lock(tmp_path, {"host": socket.gethostname(), "pid": dead.pid, "start": "1"})
    with RunLock(tmp_path) as held:  # the owner's process is gone: taken over
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    assert held._content is None and not (tmp_path / LOCK).exists()


def test_a_reused_pid_does_not_keep_a_stale_lock(tmp_path):
    # Our own pid, but a different start time: the pid now names another process.
    write_lock(tmp_path, {"host": socket.gethostname(), "pid": os.getpid(), "start": "0"})
    with RunLock(tmp_path):
        pass


def test_other_hosts_are_judged_by_their_heartbeat(tmp_path):
    owner = {"host": "node-b", "pid": 1234, "start": "5"}
    write_lock(tmp_path, owner, age_s=lock_module.STALE_S / 2)
    with pytest.raises(RunDirBusy, match="node-b"):
        RunLock(tmp_path).acquire()
    write_lock(tmp_path, owner, age_s=lock_module.STALE_S + 5)
    with RunLock(tmp_path):
        pass


def test_a_requeued_batch_job_takes_over_its_own_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    write_lock(tmp_path, {"host": "node-b", "pid": 1, "start": "5", "job": "4242"})
    with RunLock(tmp_path):
        pass


def test_a_lock_being_written_is_busy_and_garbage_goes_stale(tmp_path):
    write_lock(tmp_path, {}).write_text("")  # created this instant, content not yet written
    with pytest.raises(RunDirBusy):
        RunLock(tmp_path).acquire()
    write_lock(tmp_path, {}, age_s=lock_module.STALE_S + 5).write_text("garbage")
    os.utime(tmp_path / LOCK, (0, 0))
    with RunLock(tmp_path):
        pass


def test_release_never_removes_someone_elses_lock(tmp_path):
    held = RunLock(tmp_path)
    held.acquire()
    (tmp_path / LOCK).write_text(json.dumps({"host": "node-b", "pid": 9}))  # broken, re-taken
    held.release()
    assert json.loads((tmp_path / LOCK).read_text())["host"] == "node-b"


def test_waiting_for_a_busy_run_dir_gives_up_after_wait_s(tmp_path):
    with RunLock(tmp_path):
        t0 = time.monotonic()  # the lock's own clock
        with pytest.raises(RunDirBusy):
            RunLock(tmp_path, wait_s=1.0).acquire()
        assert time.monotonic() - t0 >= 1.0  # it waited wait_s before giving up


def test_the_default_study_folder_is_named_from_the_search(tmp_path):
    """Without hydra.sweep.dir the study, its storage and its trials live in outputs/tune/<study>;
    a different search lands elsewhere."""
    from hydra import compose, initialize_config_dir

    from src.sweeps.study import search_space, study_identity
    from tests.helpers.runs import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("tune", overrides=["model=mlp"], return_hydra_config=True)
    space, _ = search_space([f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()])
    a = study_identity(cfg, space, {"model": "mlp"}, "val_acc", "maximize")
    assert a == study_identity(cfg, space, {"model": "mlp", "device": "cpu"}, "val_acc",
                               "maximize")  # where it runs does not matter
    assert a != study_identity(cfg, space, {"model": "mlp"}, "ema_0.9/val_acc", "maximize")
    assert a != study_identity(cfg, {}, {"model": "mlp"}, "val_acc", "maximize")
    assert a != study_identity(cfg, space, {"model": "mlp", "epochs": "5"}, "val_acc",
                               "maximize")
