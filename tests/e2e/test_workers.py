"""Simulated workers, real workers (torchrun + gloo + the DDP hook) and the seed-000 commands."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from src.core.files import read_jsonl
from tests.helpers.runs import ROOT, SMALL_FAKE, run_script, summary, train

# No BatchNorm, no random draws (rand_zero off, ties give 0): both paths must agree exactly.
DETERMINISTIC = ["debug=fast", "epochs=2", "device=cpu", "optimizer=compressed_sgd_vote",
                 "num_bits=1", "compression.compressor.rand_zero=false", "compression.tie=zero",
                 "logger=none"]
SCALED_SIGN_EF = ["debug=fast", "epochs=2", "device=cpu", "optimizer=sgd", "optimizer.lr=0.05",
                  "compression=scaled_sign", "logger=none"]


def torchrun(nproc: int, args: list[str], run_dir: Path, **kwargs) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "train.py", *args, f"hydra.run.dir={run_dir}",
           "trainer.progress=false"]
    return subprocess.Popen(cmd, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, **kwargs)


def params(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


@pytest.mark.parametrize(("workers", "args"), [(2, DETERMINISTIC), (3, SCALED_SIGN_EF)],
                         ids=["vote-2", "scaled-sign-ef-mean-3"])
def test_real_workers_reach_the_parameters_of_simulated_workers(tmp_path, workers, args):
    real, simulated = tmp_path / "real", tmp_path / "simulated"
    proc = torchrun(workers, args, real)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    train(simulated, *args, f"workers={workers}")
    a, b = params(real), params(simulated)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    # The logged training loss and accuracy cover every worker's shard, counted once.
    for name in ("steps.jsonl", "history.jsonl"):
        real_log, sim_log = (read_jsonl(d / name) for d in (real, simulated))
        for r, m in zip(real_log, sim_log, strict=True):
            assert r["train_loss"] == pytest.approx(m["train_loss"], rel=1e-5)
            assert r["train_acc"] == pytest.approx(m["train_acc"], abs=1e-9)
    # Exactly one run directory's worth of outputs, written by rank 0, counting the real bytes.
    s = summary(real)
    assert s["status"] == "completed" and s["processes"] == workers == s["workers"]
    steps = s["step"]
    assert s["compression"]["bytes_sent_by_rank0"] == steps * s["compression"][
        "payload_bytes_per_worker_step"]
    assert s["compression"]["compression_ratio"] > 15
    assert [p.name for p in tmp_path.iterdir()] == ["real", "simulated"] or len(
        list(tmp_path.iterdir())) == 2


def test_a_failed_rank_ends_the_job_instead_of_hanging(tmp_path):
    args = [*SMALL_FAKE, "model=resnet20", "epochs=30", "device=cpu", "optimizer=sign_sgd",
            "logger=none"]
    proc = torchrun(2, args, tmp_path / "run", start_new_session=True)
    deadline = time.time() + 120
    while not (tmp_path / "run" / "history.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)
    children = subprocess.run(["pgrep", "-f", "-P", str(proc.pid), "train.py"],
                              capture_output=True, text=True).stdout.split()
    assert len(children) == 2, children
    subprocess.run(["kill", "-9", children[-1]], check=True)
    try:
        proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        pytest.fail("the job hung after one rank died")
    assert proc.returncode != 0


def test_multirun_over_num_bits_as_typed(tmp_path):
    proc = run_script("train.py", ["--multirun", "optimizer=compressed_sgd", "num_bits=1,2",
                                   f"hydra.sweep.dir={tmp_path}", "trainer.progress=false"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(d for d in tmp_path.iterdir() if d.is_dir())
    assert len(runs) == 2 and all(summary(r)["status"] == "completed" for r in runs)
    bits = [summary(r)["compression"]["bits_per_element"] for r in runs]
    assert sorted(bits) == [1, 2]


def test_simulated_workers_log_level_usage_and_bytes(tmp_path):
    train(tmp_path, "debug=fast", "device=cpu", "optimizer=compressed_sgd_vote", "workers=4",
          "num_bits=2", "trainer.log_every=1")
    steps = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    n_params = summary(tmp_path)["num_params"]
    assert len(steps) == 256 // (32 * 4)  # one record per step at log_every=1
    for record in steps:  # each step: every worker sends every element once, levels -2..2
        counts = record["level_counts"]
        assert len(counts) == 5 and sum(counts) == 4 * n_params and counts[2] == 0
    epoch = json.loads((tmp_path / "history.jsonl").read_text().splitlines()[0])
    assert epoch["bytes_per_step"] == 4 * math.ceil(n_params * 2 / 8)  # 4 workers x 2 bits
    assert epoch["fp32_bytes_per_step"] == 4 * 4 * n_params
    assert epoch["level_counts"] == [sum(c) for c in zip(*(r["level_counts"] for r in steps),
                                                         strict=True)]


def test_one_worker_vote_is_compressed_sgd(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train(a, "debug=fast", "device=cpu", "optimizer=compressed_sgd", "workers=1")
    train(b, "debug=fast", "device=cpu", "optimizer=compressed_sgd_vote", "workers=1")
    for key, value in params(a).items():
        assert torch.equal(value, params(b)[key])


def test_real_workers_give_a_loss_step_optimizer_the_mean_loss_of_all_ranks(tmp_path):
    """Momo's step size depends on the loss: every rank must see the all-reduced batch loss, or
    the replicas drift apart from the simulated run (and from each other)."""
    args = ["debug=fast", "epochs=2", "device=cpu", "optimizer=momo", "optimizer.lr=1",
            "averaging=none", "logger=none"]
    real, simulated = tmp_path / "real", tmp_path / "simulated"
    proc = torchrun(2, args, real)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    train(simulated, *args, "workers=2")
    a, b = params(real), params(simulated)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5)
    sizes, expected = ([s for line in (d / "history.jsonl").open()
                        for s in json.loads(line)["step_sizes"]] for d in (real, simulated))
    assert len(sizes) == 8 and sizes == pytest.approx(expected, rel=1e-4)
