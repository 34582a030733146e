"""Atomic checkpoints, loaded with weights_only=True."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from src.core.errors import CheckpointError

FORMAT = "trainkit-checkpoint-v1"


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file beside `path`, then rename: a kill never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp)
    except BaseException:  # Ctrl-C or a full disk mid-write: the old checkpoint stays, alone
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def load_checkpoint(path: Path, config_digest: str | None = None) -> dict:
    """Load a checkpoint written by this framework; one-line CheckpointError if it is not usable.

    config_digest: if given, the checkpoint must have been written by a run of the same config.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise CheckpointError(
            f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}): delete it to "
            f"retrain from scratch, or point to another run") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this framework: "
                              f"pass a checkpoint.pt written by train.py")
    if config_digest is not None and state.get("config_digest") != config_digest:
        raise CheckpointError(
            f"checkpoint {path} was written by a different config: use another run directory "
            f"(hydra.run.dir=...) or delete the checkpoint to retrain")
    return state
