"""Small pruning experiments: digits and an MLP, one epoch of 8 steps (a cell takes well under a
second), and a CIFAR-shaped fake dataset."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from src.data.bundle import DataBundle, build_data
from tests.helpers.runs import SMALL_FAKE, compose_train

QUIET = ["device=cpu", "trainer.progress=false", "logger=none"]
DIGITS = ["debug=fast", *QUIET, "pruning.keep_ratios.count=3"]


def cells(run_dir: Path) -> dict[str, dict]:
    """Every cell result of a pruning run directory, by name."""
    return {p.stem: json.loads(p.read_text()) for p in sorted((run_dir / "cells").glob("*.json"))}


def fake_cifar_data(eval_batch_size: int = 32) -> DataBundle:
    cfg = compose_train(["debug=fast", *SMALL_FAKE])
    return build_data(cfg.dataset, 32, eval_batch_size, torch.device("cpu"))
