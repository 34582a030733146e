"""A SLURM job's stop at the scheduler's signal (src/cli/batch.py), in process: outside a SLURM
job nothing changes; inside, USR2 and TERM ask the run to stop at its next record, then the
time-limit signal goes on to submitit's own handler (its requeue) and TERM ends the process."""

from __future__ import annotations

import os
import signal

import pytest

from src.cli.batch import StopOnSignal, job_logs
from src.lifecycle.run import Stopped

SLURM_JOB = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "7", "SLURM_NTASKS": "1",
             "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
             "SLURM_JOB_NODELIST": "vm", "SLURM_JOB_NUM_NODES": "1"}


@pytest.fixture
def slurm_job(monkeypatch, tmp_path):
    for key, value in {**SLURM_JOB, "SUBMITIT_FOLDER": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    calls = []
    previous = {sig: signal.signal(sig, lambda s, f: calls.append(s))
                for sig in (signal.SIGUSR2, signal.SIGTERM)}
    yield calls
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def test_outside_a_slurm_job_nothing_is_installed(monkeypatch):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    before = signal.getsignal(signal.SIGUSR2)
    stop = StopOnSignal().install()
    assert signal.getsignal(signal.SIGUSR2) is before and job_logs() == {}
    stop.check({"epoch": 1})  # never stops
    stop.uninstall()


def test_the_time_limit_signal_stops_at_the_next_record_then_submitit_requeues(slurm_job):
    stop = StopOnSignal().install()
    stop.check({"epoch": 1})
    os.kill(os.getpid(), signal.SIGUSR2)
    assert slurm_job == []  # submitit's handler waits for the run to stop
    with pytest.raises(Stopped):
        stop.check({"epoch": 2})
    with pytest.raises(SystemExit):
        stop.after_stop()
    assert slurm_job == [signal.SIGUSR2]  # then it requeues the job
    assert signal.getsignal(signal.SIGUSR2) is not stop.on_signal  # handlers given back


def test_sigterm_stops_the_run_and_ends_the_process_without_a_requeue(slurm_job):
    stop = StopOnSignal().install()
    os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(Stopped):
        stop.check({"epoch": 5})
    with pytest.raises(SystemExit) as ended:
        stop.after_stop()
    assert ended.value.code == 128 + signal.SIGTERM and slurm_job == []


def test_a_slurm_jobs_logs_are_linked_from_its_run_directory(slurm_job, tmp_path):
    logs = job_logs()
    assert {name: path.name for name, path in logs.items()} == {
        "slurm.out": "7_0_log.out", "slurm.err": "7_0_log.err"}
