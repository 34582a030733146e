"""The one lifecycle of a run (src/lifecycle/run.py), driven by a toy task in process: a fresh
run, a killed one resumed, a finished one reused or refused, a diverged one, a pruning-style cell
that fails, and a checkpoint that does not fit."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from src.core.errors import CheckpointError, ConfigError
from src.core.files import CHECKPOINT, SUMMARY, read_history, read_json
from src.engine.trainer import Diverged
from src.lifecycle.record import RunLog
from src.lifecycle.run import Lifecycle, Outcome, Stopped

STEPS = 6


class Halving:
    """w <- w / 2 + 1 for STEPS steps, one history record per step, a checkpoint every 2."""

    def __init__(self, die_at: int | None = None, diverge_at: int | None = None) -> None:
        self.step, self.w = 0, 0.0
        self.die_at, self.diverge_at = die_at, diverge_at

    def facts(self) -> dict[str, Any]:
        return {"parameters": 1}

    def progress(self) -> dict[str, Any]:
        return {"step": self.step}

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "w": self.w}

    def load_state_dict(self, ckpt: dict[str, Any]) -> int:
        self.step, self.w = ckpt["step"], ckpt["w"]
        return self.step

    def train(self, run_log: RunLog, save: Callable[..., None]) -> Outcome:
        while self.step < STEPS:
            self.step += 1
            self.w = self.w / 2 + 1
            if self.step == self.diverge_at:
                raise Diverged(f"w exploded at step {self.step}")
            run_log.append({"step": self.step, "w": self.w})
            if self.step % 2 == 0:
                save()
            if self.step == self.die_at:
                raise KeyboardInterrupt
        return Outcome("completed", {"w": self.w, "val_loss": abs(2 - self.w)})


def life(run_dir: Path, digest: str = "d1", objective: str | None = "val_loss",
         result: Path | None = None) -> Lifecycle:
    return Lifecycle(run_dir, digest, objective, result=result)


def test_a_fresh_run_trains_and_writes_its_summary_history_and_checkpoint(tmp_path):
    result = life(tmp_path).execute(lambda ckpt: Halving())
    done = read_json(tmp_path / SUMMARY)
    assert done["status"] == "completed" and done["config_digest"] == "d1"
    assert result.objective == done["objective"] == done["metrics"]["val_loss"]
    assert done["objective_name"] == "val_loss" and done["parameters"] == 1
    assert done["step"] == STEPS and not result.reused
    assert [r["step"] for r in read_history(tmp_path)] == list(range(1, STEPS + 1))
    assert (tmp_path / CHECKPOINT).exists()


def test_a_killed_run_resumes_from_its_checkpoint_to_the_uninterrupted_result(tmp_path):
    whole = life(tmp_path / "whole").execute(lambda ckpt: Halving())
    with pytest.raises(KeyboardInterrupt):
        life(tmp_path / "cut").execute(lambda ckpt: Halving(die_at=3))
    assert read_json(tmp_path / "cut" / SUMMARY)["status"] == "interrupted"
    seen = []
    resumed = life(tmp_path / "cut").execute(lambda ckpt: seen.append(ckpt["step"]) or Halving())
    assert seen == [2]  # built knowing the checkpoint it resumes from
    assert resumed.summary["metrics"] == whole.summary["metrics"]
    assert read_history(tmp_path / "cut") == read_history(tmp_path / "whole")


def test_a_finished_run_is_reused_and_one_of_another_config_is_refused(tmp_path):
    life(tmp_path).execute(lambda ckpt: Halving())
    before = (tmp_path / SUMMARY).read_bytes()
    again = life(tmp_path).execute(lambda ckpt: pytest.fail("a finished run was rebuilt"))
    assert again.reused and again.objective == read_json(tmp_path / SUMMARY)["objective"]
    with pytest.raises(ConfigError, match="with another config"):
        life(tmp_path, digest="d2").execute(lambda ckpt: Halving())
    assert (tmp_path / SUMMARY).read_bytes() == before


def test_a_diverged_run_gets_the_worst_objective_and_is_reused_as_such(tmp_path):
    result = life(tmp_path).execute(lambda ckpt: Halving(diverge_at=3))
    done = read_json(tmp_path / SUMMARY)
    assert done["status"] == "diverged" and "exploded" in done["error"]
    assert result.objective == float("inf")  # a loss: the worst is +inf
    assert life(tmp_path).execute(lambda ckpt: Halving()).objective == float("inf")


def test_a_cell_writes_its_own_record_and_nothing_when_it_fails(tmp_path):
    cell = tmp_path / "cells" / "rep0.json"
    cell.parent.mkdir()
    with pytest.raises(KeyboardInterrupt):
        life(tmp_path, objective=None, result=cell).execute(lambda ckpt: Halving(die_at=3))
    assert not cell.exists() and not (tmp_path / SUMMARY).exists()
    life(tmp_path, objective=None, result=cell).execute(lambda ckpt: Halving())
    record = read_json(cell)
    assert record["status"] == "completed" and record["w"] > 1 and "objective" not in record


def test_a_checkpoint_of_another_config_or_shape_is_one_line(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        life(tmp_path).execute(lambda ckpt: Halving(die_at=3))
    with pytest.raises(CheckpointError):
        life(tmp_path, digest="d2").execute(lambda ckpt: Halving())

    class Renamed(Halving):
        def load_state_dict(self, ckpt: dict[str, Any]) -> int:
            return ckpt["weights"]  # a key this checkpoint does not have

    with pytest.raises(CheckpointError, match=r"does not fit this run .*delete it to retrain"):
        life(tmp_path).execute(lambda ckpt: Renamed())


class Asking:
    """A job record whose report asks the run to stop after record `at` (the scheduler's
    signal, src/cli/batch.py), as JobRecord's report does."""

    hydra_cfg = None

    def __init__(self, at: int) -> None:
        self.at = at

    def start(self) -> None:
        pass

    def report(self, record: dict) -> None:
        if record["step"] == self.at:
            raise Stopped("SIGUSR2")


def test_a_run_stopped_by_the_scheduler_checkpoints_there_and_resumes_without_retraining(
        tmp_path):
    whole = life(tmp_path / "whole").execute(lambda ckpt: Halving())
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):  # Stopped is one: nothing catches it as an error
        Lifecycle(cut, "d1", "val_loss", record=Asking(at=3)).execute(
            lambda ckpt: Halving())
    assert read_json(cut / SUMMARY)["status"] == "interrupted"
    seen = []
    resumed = life(cut).execute(lambda ckpt: seen.append(ckpt["step"]) or Halving())
    assert seen == [3]  # the step it stopped at (its own checkpoints fall on even steps)
    assert resumed.summary["metrics"] == whole.summary["metrics"]
    assert read_history(cut) == read_history(tmp_path / "whole")  # every step once


def test_a_job_records_links_are_relative_and_replace_old_ones(tmp_path):
    from omegaconf import OmegaConf

    from src.lifecycle.record import JobRecord

    run_dir, logs = tmp_path / "sweep" / "run", tmp_path / "sweep" / ".submitit" / "5"
    logs.mkdir(parents=True)
    (logs / "5_0_log.out").write_text("the job's output\n")
    run_dir.mkdir()
    (run_dir / "slurm.out").symlink_to("elsewhere")  # an earlier job's link
    hydra_cfg = OmegaConf.create({"job": {"name": "train"}, "overrides": {"task": []}})
    record = JobRecord(run_dir, OmegaConf.create({}), hydra_cfg,
                       links={"slurm.out": logs / "5_0_log.out"})
    record.start()
    record.close()
    assert os.readlink(run_dir / "slurm.out") == "../.submitit/5/5_0_log.out"
    assert (run_dir / "slurm.out").read_text() == "the job's output\n"
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "slurm.out", "train.log"]
