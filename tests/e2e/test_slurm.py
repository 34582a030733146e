"""The cluster path on a real SLURM (tests/helpers/slurm.py: munge, MariaDB, slurmdbd, slurmctld
and slurmd on this machine), each case against the same run on the basic launcher: a grid
through sbatch, job arrays one at a time, a time-out and a preemption that requeue a run which
resumes to the uninterrupted result, DDP across SLURM tasks, a search whose trials are SLURM
jobs (one cancelled), and a job that fails on the cluster."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.helpers.runs import QUIET, ROOT, run_script, start, study_trials, summary, wait_for
from tests.helpers.slurm import Cluster, slurm_cluster, why_not
from tests.helpers.trackers import wandb_run

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.xdist_group("slurm")]

SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=10"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    reason = why_not()
    if reason is not None:
        pytest.skip(reason)
    with slurm_cluster() as started:
        print(f"SLURM test cluster started in {started.started_s:.1f} s")
        yield started


def history(run_dir: Path) -> list[dict]:
    """The run's history without its clock readings."""
    records = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith(("_s", "_time"))} for r in records]


def same_run(a: Path, b: Path) -> None:
    """Two run directories hold the same run: status, metrics and history, to the bit."""
    sa, sb = summary(a), summary(b)
    assert (sa["status"], sa["metrics"]) == (sb["status"], sb["metrics"]), (a, b)
    assert history(a) == history(b)


def job_log(run_dir: Path) -> str:
    """The SLURM job's log, as the run directory links it (standard output, then error)."""
    return "".join((run_dir / name).resolve().read_text() for name in ("slurm.out", "slurm.err"))


def run_dirs(folder: Path) -> dict[str, Path]:
    return {d.name: d for d in sorted(folder.iterdir()) if (d / "summary.json").exists()}


def test_a_grid_goes_through_sbatch_and_gives_the_basic_launchers_runs(cluster, tmp_path):
    grid = ["-m", "debug=fast", "seed=0,1", *QUIET]
    on_slurm = run_script("train.py", [*grid, *SLURM, f"hydra.sweep.dir={tmp_path / 's'}"],
                          env=cluster.env)
    assert on_slurm.returncode == 0, on_slurm.stdout[-3000:] + on_slurm.stderr[-3000:]
    basic = run_script("train.py", [*grid, f"hydra.sweep.dir={tmp_path / 'b'}"],
                       env=cluster.env)
    assert basic.returncode == 0, basic.stderr[-3000:]
    s, b = run_dirs(tmp_path / "s"), run_dirs(tmp_path / "b")
    assert sorted(s) == sorted(b) and len(s) == 2
    for name in s:
        same_run(s[name], b[name])
    # each run ran as a SLURM job: the sweep's last lines name it, the run directory links its
    # logs, and the scheduler recorded it as completed
    jobs = {}
    for name, run_dir in s.items():
        job = summary(run_dir)["batch_job"]
        jobs[name] = job
        assert f"{run_dir} (SLURM job {job})" in on_slurm.stdout
        assert "completed" in job_log(run_dir)
        assert cluster.final_states(job) == ["COMPLETED"]
    assert len(set(jobs.values())) == 2


def test_array_parallelism_1_runs_the_jobs_one_at_a_time(cluster, tmp_path):
    proc = run_script("train.py", ["-m", "debug=fast", "seed=0,1,2", *QUIET, *SLURM,
                                   "hydra.launcher.array_parallelism=1",
                                   f"hydra.sweep.dir={tmp_path}"], env=cluster.env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    spans = sorted((s["started_at"], s["finished_at"]) for s in map(summary, run_dirs(
        tmp_path).values()))
    assert len(spans) == 3
    for (_, end), (begin, _) in itertools.pairwise(spans):
        assert begin > end  # never two at once
    out = cluster.run("sacct", "-X", "-n", "-P", "-o", "JobID,Start,End", "-S", "now-1hour").stdout
    tasks = sorted(line.split("|") for line in out.splitlines() if "_" in line.split("|")[0])
    assert len({t[0].split("_")[0] for t in tasks[-3:]}) == 1  # one array of three tasks
    assert all(b[1] >= a[2] for a, b in zip(tasks[-3:], tasks[-2:], strict=False))
    assert os.environ.get("SLURM_CONF") is None  # the cluster's settings stay in cluster.env


# About 37 s of training alone here. SLURM checks time limits every 30 s: with a 1-minute
# limit and the signal 55 s ahead, it comes 5 to 35 s into each job, so the first job is always
# signalled and each later one trains a while before it is.
LONG = ["debug=fast", "dataset.train_limit=1024", "epochs=1200", "trainer.checkpoint_every=50",
        "seed=0", *QUIET]
TIME_LIMIT = ["hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=1",
              "hydra.launcher.signal_delay_s=55", "hydra.launcher.max_num_timeout=20"]


@pytest.fixture(scope="module")
def uninterrupted(cluster, tmp_path_factory) -> Path:
    """The long run, trained at once on the basic launcher: what a requeued run must equal."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    proc = run_script("train.py", ["-m", *LONG, f"hydra.sweep.dir={folder}"], env=cluster.env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = run_dirs(folder).values()
    return run_dir


def resumes(run_dir: Path) -> list[int]:
    """The epochs the run resumed from, each checked to be the last epoch its previous job
    trained (nothing trained twice); and every epoch is in the history once."""
    per_epoch = summary(run_dir)["step"] // summary(run_dir)["epochs_completed"]
    last, out = 0, []
    (log,) = run_dir.glob("*.log")  # train.log, or tune.log for a trial
    for line in log.read_text().splitlines():
        if " - epoch " in line:
            last = int(line.split(" - epoch ")[1].split("/")[0])
        if "from its checkpoint (step" in line:
            step = int(line.rsplit("(step ", 1)[1].rstrip(")"))
            assert step == last * per_epoch, line  # resumed at the last epoch trained
            out.append(last)
    epochs = [r["epoch"] for r in history(run_dir)]
    assert epochs == list(range(1, len(epochs) + 1))
    return out


def test_a_run_past_its_time_limit_is_requeued_and_resumes_to_the_same_result(
        cluster, uninterrupted, tmp_path):
    proc = run_script("train.py", ["-m", *LONG, *TIME_LIMIT, f"hydra.sweep.dir={tmp_path}"],
                      env=cluster.env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path).values()
    assert resumes(run_dir)  # it was stopped, and resumed where it stopped
    assert not (run_dir / "run.lock").exists()
    job = summary(run_dir)["batch_job"]
    states = cluster.final_states(job)
    print(f"time-out: sacct states of job {job}: {states}")
    assert states[-1] == "COMPLETED" and set(states[:-1]) == {"REQUEUED"}, states
    assert "got SIGUSR2 from the scheduler" in job_log(run_dir)
    same_run(run_dir, uninterrupted)


def test_a_preempted_run_is_requeued_and_resumes_to_the_same_result(
        cluster, uninterrupted, tmp_path):
    # with W&B offline: the requeued job continues the same W&B run (its service is signalled
    # with the job)
    tracked = [a for a in LONG if not a.startswith("logger=")] + ["logger=wandb"]
    proc = start("train.py", ["-m", *tracked, *SLURM, f"hydra.sweep.dir={tmp_path}"],
                 tmp_path / "log", env=cluster.env)
    run_dir = tmp_path / ("dataset.train_limit=1024,debug=fast,epochs=1200,seed=0,"
                          "trainer.checkpoint_every=50")

    def trained(epochs: int) -> bool:
        path = run_dir / "history.jsonl"
        return path.exists() and len(path.read_text().splitlines()) >= epochs

    wait_for(lambda: trained(20), timeout=300, what="20 epochs on the cluster")
    job = json.loads((run_dir / "run.lock").read_text())["job"]
    cluster.run("scontrol", "requeue", job)  # how a preemption looks to the job
    assert proc.wait(timeout=900) == 0, (tmp_path / "log").read_text()[-3000:]
    assert len(resumes(run_dir)) == 1
    assert "got SIGTERM from the scheduler" in job_log(run_dir)
    states = cluster.final_states(job)
    print(f"preemption: sacct states of job {job}: {states}")
    assert states == ["REQUEUED", "COMPLETED"], states
    same_run(run_dir, uninterrupted)
    wb = wandb_run(run_dir)  # SIGTERM reached W&B's service too: the first start never ended
    assert wb.starts == 2 and len(wb.ids) == 1 and wb.exit_codes[-1] == 0
    assert wb.summary["status"] == "completed"
    assert wb.series("epoch/epoch") == [(r["step"], r["epoch"]) for r in history(run_dir)]


def test_two_slurm_tasks_are_the_torchrun_run_with_two_processes(cluster, tmp_path):
    args = ["debug=fast", "epochs=2", "device=cpu", "optimizer=compressed_sgd_vote",
            "num_bits=1", "compression.compressor.rand_zero=false", "compression.tie=zero",
            *QUIET]
    proc = run_script("train.py", ["-m", *args, *SLURM, "hydra.launcher.tasks_per_node=2",
                                   f"hydra.sweep.dir={tmp_path / 's'}"], env=cluster.env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    torchrun = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "train.py", *args, f"hydra.run.dir={tmp_path / 't'}"], cwd=ROOT, text=True,
        capture_output=True, timeout=300)
    assert torchrun.returncode == 0, torchrun.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path / "s").values()
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [".submitit", run_dir.name,
                                                                 "multirun.yaml"]
    assert summary(run_dir)["processes"] == summary(tmp_path / "t")["processes"] == 2
    same_run(run_dir, tmp_path / "t")
    a = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "t" / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_search_on_slurm_retries_a_cancelled_trial_from_its_checkpoint(cluster, tmp_path):
    args = ["debug=fast", "dataset.train_limit=1024", "epochs=600", *QUIET, *SLURM,
            "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=3", "hydra.sweeper.retry_dead=1",
            "hydra.sweeper.sampler.seed=0", f"hydra.sweep.dir={tmp_path}"]
    proc = start("tune.py", args, tmp_path / "log", env=cluster.env)
    db = tmp_path / "optuna.db"

    def two_training() -> bool:
        locks = list(tmp_path.glob("*/run.lock"))
        return len(locks) == 2 and all(
            (lock.parent / "checkpoint.pt").exists() for lock in locks)

    wait_for(two_training, timeout=300, what="two trials training on the cluster")
    victim = sorted(tmp_path.glob("*/run.lock"))[0].parent
    job = json.loads((victim / "run.lock").read_text())["job"]
    cluster.run("scancel", job)
    assert proc.wait(timeout=900) == 1  # a trial failed (cancelled), so the search says so
    out = (tmp_path / "log").read_text()
    assert re.search(rf"failed +- +{re.escape(str(victim))} \(SLURM job {job}\): SLURM job "
                     rf"{job} ended CANCELLED", out), out
    trials = study_trials(db)
    assert [t.state.name for t in trials].count("COMPLETE") == 2
    (cancelled,) = [t for t in trials if t.state.name == "FAIL"]
    (retried,) = [t for t in trials if t.system_attrs.get("failed_trial") == cancelled.number]
    assert retried.state.name == "COMPLETE" and retried.params == cancelled.params
    assert Path(retried.user_attrs["run_dir"]) == victim
    assert len(resumes(victim)) == 1 and summary(victim)["status"] == "completed"
    assert cluster.final_states(job)[0].startswith("CANCELLED")  # then the retry's own job
    print(f"search: sacct states of the cancelled trial's job {job}: {cluster.final_states(job)}")


def test_a_job_that_fails_on_the_cluster_is_reported_with_the_reason_in_its_log(
        cluster, tmp_path):
    proc = run_script("train.py", ["-m", "debug=fast", "optimizer=sgd", "optimizer.lr=0.1,-1",
                                   *QUIET, *SLURM, f"hydra.sweep.dir={tmp_path}"],
                      env=cluster.env)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    bad = tmp_path / "debug=fast,optimizer.lr=-1,optimizer=sgd"
    (line,) = [line for line in proc.stdout.splitlines() if str(bad) in line]
    found = re.fullmatch(rf"  failed +- +{re.escape(str(bad))} \(SLURM job (\S+)\): (.+)", line)
    assert found, line
    job, reason = found.groups()
    assert "Invalid learning rate: -1" in reason
    assert reason in job_log(bad)  # the job said so in its own log
    assert cluster.final_states(job) == ["COMPLETED"]  # the job ran; its run failed
