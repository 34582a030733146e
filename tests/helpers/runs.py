"""Compose the real configs in process, or run the real entry points as a user would."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from src.cli.entry import register_resolvers
from src.core.files import CONF

ROOT = CONF.parent
# A small fake dataset: CIFAR-shaped, generated in milliseconds.
SMALL_FAKE = ["dataset=fake", "dataset.source.num_train=600", "dataset.source.num_test=200",
              "dataset.val_size=100"]
QUIET = ["trainer.progress=false", "logger=none"]

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


def start(script: str, args: list[str], log: Path,
          env: dict[str, str] | None = None) -> subprocess.Popen:
    """An entry point in the background, in its own process group (so a kill takes it all)."""
    out = open(log, "w")  # noqa: SIM115 - closed by the process's end
    return subprocess.Popen([sys.executable, script, *args], cwd=ROOT, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**(env or os.environ), "PYTHONUNBUFFERED": "1"})


def wait_for(condition, timeout: float = 120, what: str = "condition") -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below `folder` (hidden ones included) and the sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def study_trials(db: Path) -> list[optuna.trial.FrozenTrial]:
    """The trials of the one study in a sqlite file."""
    storage = f"sqlite:///{db}"
    (summary_,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary_.study_name, storage=storage).trials


def die_after_first_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make a run raise KeyboardInterrupt right after it writes its first checkpoint (a run
    killed there); later checkpoints are written normally."""
    import src.lifecycle.run

    real_save, calls = src.lifecycle.run.save_atomic, []

    def save_then_die(obj: object, path: Path) -> None:
        real_save(obj, path)
        calls.append(path)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(src.lifecycle.run, "save_atomic", save_then_die)


def hparams_of_run(run_dir: Path) -> tuple[dict, int]:
    """A run's HPARAMS entry as TensorBoard reads it: its hparams and its session status."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    hp, status = {}, None
    for tag, raw in events.PluginTagToContent("hparams").items():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        if tag.endswith("session_start_info"):
            hp = {k: v.string_value or v.number_value
                  for k, v in data.session_start_info.hparams.items()}
        if tag.endswith("session_end_info"):
            status = data.session_end_info.status
    return hp, status
