"""train.py end to end as a user runs it: the run-directory contract, resume, divergence, errors."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from src.engine.samples import read_samples
from tests.helpers.runs import ROOT, SMALL_FAKE, run_script, summary, train

HISTORY_KEYS = {"epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "wall_s"}
TIMING_KEYS = {"epoch_s", "wall_s", "samples_per_s", "train_epoch_time", "track_samples_s"}


def history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def digest(folder: Path, names: list[str]) -> dict[str, str]:
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}


@pytest.mark.smoke  # make test-fast runs it
def test_default_command_trains_digits_to_95_percent_and_writes_the_contract(tmp_path):
    train(tmp_path)  # python train.py with its defaults (only the run dir and progress bar set)
    s = summary(tmp_path)
    assert s["status"] == "completed"
    assert s["metrics"]["test_acc"] >= 0.95
    for name in ("ema_0.9", "ema_0.99"):  # every averaged model, final and best
        keys = {f"{name}/val_acc", f"{name}/test_acc", f"{name}/best/test_loss"}
        assert keys <= set(s["metrics"])
    assert {"val_acc", "val_loss", "test_acc", "test_loss", "train_loss", "best/test_acc"} <= set(
        s["metrics"])
    assert s["objective"] == s["metrics"]["val_acc"]
    assert s["num_params"] > 0 and s["versions"]["torch"] == torch.__version__
    records = history(tmp_path)
    assert [r["epoch"] for r in records] == list(range(1, 31))
    assert HISTORY_KEYS | {"ema_0.99/val_acc"} <= set(records[0])
    assert (tmp_path / ".hydra" / "config.yaml").exists()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    ckpt = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 30


@pytest.mark.slow
def test_killed_run_resumes_to_the_bit_identical_result(tmp_path):
    args = [*SMALL_FAKE, "model=resnet20", "epochs=4", "batch_size=32", "device=cpu",
            "dataset.train_limit=256", "dataset.eval_limit=64", "averaging.decays=[0.9,0.99]",
            "trainer.track_samples=true"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    train(whole, *args)

    cmd = [sys.executable, "train.py", *args, f"hydra.run.dir={killed}", "trainer.progress=false"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # mid-epoch 2: no chance to clean up
    proc.wait()
    assert not (killed / "summary.json").exists(), "run ended before the kill: lengthen it"
    assert len(history(killed)) < 4

    train(killed, *args)  # the same command again
    a, b = summary(whole), summary(killed)
    assert b["status"] == "completed" and a["metrics"] == b["metrics"]
    strip = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in history(whole)]
    assert strip == [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in history(killed)]
    wa = torch.load(whole / "checkpoint.pt", weights_only=True)
    wb = torch.load(killed / "checkpoint.pt", weights_only=True)
    for key, value in wa["model"].items():
        assert torch.equal(value, wb["model"][key]), key
    for key, value in wa["ema"]["averages"]["ema_0.99"].items():
        assert torch.equal(value, wb["ema"]["averages"]["ema_0.99"][key]), key
    # the per-sample record too: the killed epoch's rows were cut off and recorded again
    sa, sb = read_samples(whole), read_samples(killed)
    assert sb.epochs.tolist() == [1, 2, 3, 4]
    for key, value in sa.correct.items():
        assert np.array_equal(value, sb.correct[key]), key


def test_finished_run_is_not_trained_again(tmp_path, tiny_args):
    train(tmp_path, *tiny_args)
    before = digest(tmp_path, ["summary.json", "checkpoint.pt", "history.jsonl"])
    train(tmp_path, *tiny_args)
    assert digest(tmp_path, ["summary.json", "checkpoint.pt", "history.jsonl"]) == before


def test_divergence_is_recorded_and_a_sweep_goes_on(tmp_path):
    proc = run_script("train.py", ["-m", "debug=fast", "epochs=4", "optimizer=sgd",
                                   "optimizer.lr=0.1,1e6", f"hydra.sweep.dir={tmp_path}",
                                   "trainer.progress=false"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = {summary(d)["status"]: summary(d) for d in tmp_path.iterdir() if d.is_dir()}
    assert set(runs) == {"completed", "diverged"}
    assert runs["diverged"]["objective"] == 0.0  # worst case for an accuracy
    assert runs["completed"]["objective"] > 0.5


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished")
    train(run_dir, "debug=fast", "device=cpu")
    return run_dir


@pytest.mark.parametrize(("override", "says"), [
    ("num_bits=0", "num_bits=0"),
    ("num_bits=33", "num_bits=33"),
    ("workers=0", "workers=0"),
    ("model=resnet21", "unknown model 'resnet21'"),
    ("optimizer=sgd,adamz", "unknown optimizer 'adamz'"),
    ("objective=ema_0.5/val_acc", "objective=ema_0.5/val_acc"),
    ("device=tpu", "device=tpu"),
])
def test_bad_overrides_give_one_line_and_touch_no_earlier_run(finished_run, override, says):
    kept = ["summary.json", "checkpoint.pt", "history.jsonl"]
    before = digest(finished_run, kept)
    line = one_error_line(train(finished_run, "debug=fast", "device=cpu", override, check=False))
    assert says in line
    assert digest(finished_run, kept) == before


def test_corrupt_checkpoint_gives_one_line(tmp_path, tiny_args):
    train(tmp_path, *tiny_args, "epochs=2")
    (tmp_path / "summary.json").unlink()  # pretend the run was killed, then its checkpoint broke
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    before = digest(tmp_path, ["checkpoint.pt", "history.jsonl"])
    line = one_error_line(train(tmp_path, *tiny_args, "epochs=2", check=False))
    assert "checkpoint.pt is corrupt" in line and "delete it" in line
    assert digest(tmp_path, ["checkpoint.pt", "history.jsonl"]) == before


def test_missing_dataset_gives_one_line_and_leaves_no_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    proc = train(run_dir, "dataset=cifar10", f"data_dir={tmp_path / 'empty'}", check=False)
    line = one_error_line(proc)
    assert "dataset.download=true" in line and str(tmp_path / "empty") in line
    assert not run_dir.exists()


def test_help_lists_the_groups_and_their_options():
    proc = run_script("train.py", ["--help"])
    assert proc.returncode == 0
    for text in ("model ", "resnet20", "optimizer ", "sign_sgd", "scheduler ", "multistep_he",
                 "averaging ", "dataset ", "cifar100", "debug ", "experiment "):
        assert text in proc.stdout, text


@pytest.mark.slow
def test_figure1_sweep_is_15_trainings_with_5_decays_each(tmp_path):
    # stacked: its 5 schedules x 3 seeds differ only in what a stack lets its runs differ in
    proc = run_script("train.py", ["-m", "experiment=ema_resnet20_cifar10", "debug=fast",
                                   *SMALL_FAKE, "model=mlp", f"hydra.sweep.dir={tmp_path}",
                                   "trainer.progress=false", "logger=none",
                                   "hydra/launcher=stacked"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "stacked: 15 job(s): 15 in 1 stack(s), 0 alone" in proc.stdout + proc.stderr
    runs = [summary(d) for d in tmp_path.iterdir() if d.is_dir()]
    assert len(runs) == 15 and all(r["status"] == "completed" for r in runs)
    decays = ("0.9", "0.99", "0.999", "0.9995", "0.9997")
    assert all(f"ema_{d}/test_acc" in r["metrics"] for r in runs for d in decays)


def test_joblib_launcher_runs_trainings_in_parallel(tmp_path):
    proc = run_script("train.py", ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                                   "debug=fast", "seed=0,1", f"hydra.sweep.dir={tmp_path}",
                                   "trainer.progress=false", "logger=none"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = [summary(d) for d in tmp_path.iterdir() if d.is_dir()]
    assert len(runs) == 2 and all(r["status"] == "completed" for r in runs)
    assert runs[0]["metrics"] != runs[1]["metrics"]  # two seeds, two different trainings


def killed_and_resumed(run_dir: Path, args: list[str], resume: bool = True) -> None:
    """train.py into run_dir, SIGKILLed once its first checkpoint is written, then again
    (resume)."""
    cmd = [sys.executable, "train.py", *args, f"hydra.run.dir={run_dir}", "trainer.progress=false"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run_dir / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "summary.json").exists(), "run ended before the kill: lengthen it"
    if resume:
        train(run_dir, *args)


@pytest.mark.slow
def test_an_image_folder_resident_or_streamed_resumes_bit_identical_and_refuses_a_changed_folder(
        tmp_path):
    """With Mixup, CutMix, label smoothing and RandAugment drawn from the run's generator."""
    from tests.helpers.datafiles import write_image_folder

    root = write_image_folder(tmp_path / "images", {"train": 60, "test": 4}, size=16)
    args = ["dataset=image_folder", f"dataset.root={root}", f"data_dir={tmp_path / 'data'}",
            "dataset.val_size=20", "model=resnet20", "epochs=4", "batch_size=16", "device=cpu",
            "logger=none", "augment=mixup_cutmix", "augment.policy=randaugment"]
    runs = {}
    for resident in ("true", "false"):
        whole, killed = tmp_path / f"whole_{resident}", tmp_path / f"killed_{resident}"
        train(whole, *args, f"dataset.resident={resident}")
        killed_and_resumed(killed, [*args, f"dataset.resident={resident}"])
        a, b = summary(whole), summary(killed)
        assert b["status"] == "completed" and a["metrics"] == b["metrics"]
        assert b["data_streamed"] is (resident == "false")
        strip = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in history(whole)]
        assert strip == [{k: v for k, v in r.items() if k not in TIMING_KEYS}
                         for r in history(killed)]
        runs[resident] = strip
    assert runs["true"] == runs["false"]  # streaming delivers the resident batches
    # a folder that changed under a run is refused on resume, in one line, changing nothing
    half = tmp_path / "half"
    killed_and_resumed(half, args, resume=False)
    def files() -> dict[Path, bytes]:  # the killed process's stale lock is taken and let go
        return {p: p.read_bytes() for p in half.rglob("*") if p.is_file() and p.name != "run.lock"}

    before = files()
    from PIL import Image
    Image.new("RGB", (16, 16)).save(root / "train/class0/added.png")
    proc = train(half, *args, check=False)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert f"dataset.root={root} changed since this run started" in line
    assert before == files()
