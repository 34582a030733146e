"""Shared helpers: compose the real configs, run the real entry points in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from src.sweeps.cli import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# A small fake dataset: CIFAR-shaped, generated in milliseconds.
SMALL_FAKE = ["dataset=fake", "dataset.source.num_train=600", "dataset.source.num_test=200",
              "dataset.val_size=100"]

register_resolvers()


def compose_train(overrides: list[str]) -> DictConfig:
    """conf/train.yaml composed with `overrides`, as train.py would see it."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides)


def run_script(script: str, args: list[str], timeout: float = 300,
               **kwargs) -> subprocess.CompletedProcess:
    """Run one of the entry points like a user would, from the repo root."""
    env = {**kwargs.pop("env", os.environ), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout, **kwargs)


def train(run_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """train.py into `run_dir` without a progress bar."""
    proc = run_script("train.py", [*args, f"hydra.run.dir={run_dir}", "trainer.progress=false"])
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


@pytest.fixture
def tiny_args() -> list[str]:
    """A fast, CPU-only run: debug=fast on digits with an MLP."""
    return ["debug=fast", "device=cpu"]


def die_after_first_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make src.runner raise KeyboardInterrupt right after it writes its first checkpoint (a run
    killed there); later checkpoints are written normally."""
    import src.runner

    real_save, calls = src.runner.save_atomic, []

    def save_then_die(obj: object, path: Path) -> None:
        real_save(obj, path)
        calls.append(path)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(src.runner, "save_atomic", save_then_die)
