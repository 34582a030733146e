"""Runs made before the shared lifecycle (commit 1a10859) resume on today's code bit for bit.

tests/fixtures/v1/<task>/ holds the checkpoint that code wrote when a run was killed part-way
(classify: EMA and 2-bit compressed workers; regimes: the perceptron with its gradient
statistics), and what that code made of it when it resumed: digest, summary metrics, history,
and the torch it ran on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from src.core.files import CHECKPOINT, read_history, read_json
from src.lifecycle.identity import config_digest
from tests.helpers.runs import compose_train

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "v1"
TIMING = ("wall_s", "epoch_s", "samples_per_s", "train_epoch_time")
# The trainer's running training loss is a float32 sum whose order is the loss kernel's: another
# torch build may round its last bit differently (seen: 2.14.1+cu130 against the build the
# fixture was first made on). The weights, every evaluation and the summary stay exact.
RUNNING_SUMS = ("train_loss",)


def untimed(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING}


@pytest.mark.parametrize("task", ["classify", "regimes"])
def test_a_checkpoint_of_the_old_code_resumes_to_the_uninterrupted_result(task, tmp_path):
    from src.tasks import task_run

    kept = FIXTURES / task
    expected = read_json(kept / "expected.json")
    cfg = compose_train(expected["args"])
    assert config_digest(cfg) == expected["config_digest"]  # same config, same identity
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(kept / CHECKPOINT, run_dir / CHECKPOINT)
    assert 0 < expected["resumed_at_step"] < expected["final_step"]
    task_run(cfg)(cfg, run_dir, None)
    done = read_json(run_dir / "summary.json")
    assert done["status"] == expected["status"]
    assert done["config_digest"] == expected["config_digest"]
    assert done["metrics"] == expected["metrics"]  # every float, bit for bit
    # the checkpoint carries the history up to its step: the whole history comes back
    got = [untimed(r) for r in read_history(run_dir)]
    want = [untimed(r) for r in expected["history"]]
    if torch.__version__ != expected["torch"]:
        for record in want:
            for key in RUNNING_SUMS:
                if key in record:
                    record[key] = pytest.approx(record[key], rel=1e-6)
    assert got == want
