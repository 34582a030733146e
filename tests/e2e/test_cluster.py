"""Past one machine, on the engines themselves: a real PostgreSQL server shared by two searches,
submitit's local launcher (real separate processes, the stand-in for SLURM), one DDP worker per
submitit task, and torchrun across two "nodes" meeting at a rendezvous endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from tests.helpers.postgres import free_port, postgres_server, why_not
from tests.helpers.runs import QUIET, ROOT, run_script, start, study_trials, summary, train

# No BatchNorm, no random draws: W real processes reach the parameters of W simulated workers.
DETERMINISTIC = ["debug=fast", "epochs=2", "device=cpu", "optimizer=compressed_sgd_vote",
                 "num_bits=1", "compression.compressor.rand_zero=false", "compression.tie=zero",
                 *QUIET]


def params(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


def assert_same_parameters(a: Path, b: Path) -> None:
    pa, pb = params(a), params(b)
    for key in pa:
        torch.testing.assert_close(pa[key], pb[key], rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(why_not() is not None, reason=str(why_not()))
def test_two_searches_share_a_study_on_a_real_postgresql_server(tmp_path):
    with postgres_server() as url:
        args = ["debug=fast", *QUIET, "hydra.sweeper.n_trials=3", f"hydra.sweeper.storage={url}"]
        procs = [start("tune.py", [*args, f"hydra.sweep.dir={tmp_path / f'p{i}'}"],
                       tmp_path / f"p{i}.log") for i in range(2)]
        for i, p in enumerate(procs):
            assert p.wait(timeout=300) == 0, (tmp_path / f"p{i}.log").read_text()[-3000:]
        (study,) = optuna.get_all_study_summaries(url)
        trials = optuna.load_study(study_name=study.study_name, storage=url).trials
    assert study.study_name.startswith("digits-mlp-val_acc-")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6
    runs = [Path(t.user_attrs["run_dir"]) for t in trials]
    assert {r.parent.name for r in runs} == {"p0", "p1"}  # each process's trials, its own folder
    assert all(summary(r)["status"] == "completed" for r in runs)


@pytest.mark.slow
def test_submitit_local_runs_each_job_in_its_own_process(tmp_path):
    proc = run_script("train.py", ["-m", "hydra/launcher=submitit_local", "debug=fast",
                                   "seed=0,1", "optimizer.lr=-1,0.05", *QUIET,
                                   f"hydra.sweep.dir={tmp_path}"])
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]  # lr=-1 failed
    assert "4 job(s): 2 completed, 2 failed" in proc.stdout
    runs = {d.name: summary(d) for d in tmp_path.iterdir() if (d / "summary.json").exists()}
    done = [s for name, s in runs.items() if "optimizer.lr=0.05" in name]
    assert len(done) == 2 and all(s["status"] == "completed" for s in done)
    pids = {s["pid"] for s in done}
    assert len(pids) == 2 and os.getpid() not in pids


@pytest.mark.slow
def test_tune_trials_through_submitit_local(tmp_path):
    proc = run_script("tune.py", ["hydra/launcher=submitit_local", "debug=fast", *QUIET,
                                  "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path}"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = study_trials(tmp_path / "optuna.db")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2
    assert "reproduce with: python train.py" in proc.stdout


@pytest.mark.slow
def test_submitit_tasks_are_ddp_workers(tmp_path):
    """hydra.launcher.tasks_per_node=2: one process per task (per GPU on a cluster), joined into
    one DDP job; the same parameters as two simulated workers."""
    proc = run_script("train.py", ["-m", "hydra/launcher=submitit_local",
                                   "hydra.launcher.tasks_per_node=2", *DETERMINISTIC,
                                   f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = [d for d in (tmp_path / "sweep").iterdir() if (d / "summary.json").exists()]
    s = summary(run_dir)
    assert s["status"] == "completed" and s["processes"] == 2
    train(tmp_path / "simulated", *DETERMINISTIC, "workers=2")
    assert_same_parameters(run_dir, tmp_path / "simulated")


@pytest.mark.slow
def test_torchrun_across_two_nodes_writes_one_run_directory(tmp_path):
    """Two torchrun agents (one per "node") meet at a c10d rendezvous endpoint; rank 0 alone
    writes the one run directory on the shared file system."""
    run_dir, port = tmp_path / "run", free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
           "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=test",
           "train.py", *DETERMINISTIC, f"hydra.run.dir={run_dir}"]
    nodes = [subprocess.Popen(cmd, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for _ in range(2)]
    outs = [n.communicate(timeout=300)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    s = summary(run_dir)
    assert s["status"] == "completed" and s["processes"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    train(tmp_path / "simulated", *DETERMINISTIC, "workers=2")
    assert_same_parameters(run_dir, tmp_path / "simulated")
