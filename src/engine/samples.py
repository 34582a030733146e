"""Per-sample correctness every epoch (the weight-averaging study's per-sample record).

For each tracked split and each model (the raw model and every EMA), whether it classifies each
sample correctly, one row per epoch, bit-packed: `samples/<model>.<split>.bits` holds ceil(N/8)
bytes a row (numpy packbits, little bit order), and `samples/index.json` says which epochs the
rows are and how many samples each split has. The index is written last and atomically: rows a
killed process appended beyond it are cut off before the next row is written, and a resumed
run first cuts every file back to the epochs its checkpoint holds. No pickle anywhere.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from src.core.errors import UserError
from src.core.files import write_json_atomic

FOLDER = "samples"
INDEX = "index.json"
FORMAT = 1


def bits_name(model: str, split: str) -> str:
    return f"{model}.{split}.bits"


def row_bytes(n: int) -> int:
    return (n + 7) // 8


class SampleRecorder:
    """Appends one row of correctness per model and split each epoch; see the module docstring."""

    def __init__(self, run_dir: Path, models: list[str], splits: dict[str, int],
                 resume_epoch: int) -> None:
        self.folder = Path(run_dir) / FOLDER
        self.models, self.splits = list(models), dict(splits)
        index = self.folder / INDEX
        old = json.loads(index.read_text()) if index.exists() else None
        if old is not None and (old.get("models") != self.models or old.get("splits")
                                != self.splits or old.get("format") != FORMAT):
            raise UserError(f"{self.folder} records models {old.get('models')} on splits "
                            f"{old.get('splits')}, this run has {self.models} on {self.splits}: "
                            f"delete {self.folder} to record afresh")
        if old is None:
            self.first_epoch, self.epochs = resume_epoch + 1, 0
        else:  # rows past the checkpoint's epoch are retrained: cut them off
            self.first_epoch = old["first_epoch"]
            self.epochs = min(old["epochs"], max(0, resume_epoch - self.first_epoch + 1))
        self.folder.mkdir(parents=True, exist_ok=True)
        for model in self.models:
            for split, n in self.splits.items():
                path = self.folder / bits_name(model, split)
                with open(path, "ab") as f:
                    f.truncate(self.epochs * row_bytes(n))
        self.write_index()

    def write_index(self) -> None:
        write_json_atomic(self.folder / INDEX, {
            "format": FORMAT, "bitorder": "little", "models": self.models,
            "splits": self.splits, "first_epoch": self.first_epoch, "epochs": self.epochs})

    def append(self, correct: dict[tuple[str, str], torch.Tensor]) -> None:
        """One epoch's rows: correct[(model, split)] is a bool tensor of the split's samples
        (on any device: all of them come to the host in one transfer)."""
        keys = [(m, s) for m in self.models for s in self.splits]
        host = torch.cat([correct[k].flatten() for k in keys]).cpu().numpy()
        start = 0
        for model, split in keys:
            n = self.splits[split]
            row = np.packbits(host[start:start + n], bitorder="little")
            start += n
            path = self.folder / bits_name(model, split)
            with open(path, "r+b") as f:
                f.truncate(self.epochs * row_bytes(n))  # rows of a killed epoch, if any
                f.seek(0, os.SEEK_END)
                f.write(row.tobytes())
        self.epochs += 1
        self.write_index()


@dataclass
class SampleRecord:
    """What a run recorded: correct[(model, split)] is a bool array (epochs, samples)."""

    epochs: np.ndarray  # the epoch of each row, 1-based
    models: list[str]
    splits: dict[str, int]
    correct: dict[tuple[str, str], np.ndarray]


class SampleRecordError(UserError):
    """A samples folder that cannot be read as this format."""


def read_samples(run_dir: Path) -> SampleRecord | None:
    """The run's per-sample record, or None if it has none; a damaged one is an error."""
    folder = Path(run_dir) / FOLDER
    index_path = folder / INDEX
    if not index_path.exists():
        return None
    try:
        index = json.loads(index_path.read_text())
        models, splits = list(index["models"]), {str(k): int(v) for k, v in
                                                  index["splits"].items()}
        epochs, first = int(index["epochs"]), int(index["first_epoch"])
        if index.get("format") != FORMAT or index.get("bitorder") != "little":
            raise ValueError(f"format {index.get('format')}")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise SampleRecordError(f"{index_path} is not a samples index ({type(e).__name__}): "
                                f"delete {folder} and retrain to record it again") from None
    correct = {}
    for model in models:
        for split, n in splits.items():
            path = folder / bits_name(model, split)
            raw = np.fromfile(path, dtype=np.uint8) if path.exists() else np.zeros(0, np.uint8)
            need = epochs * row_bytes(n)
            if raw.size < need:
                raise SampleRecordError(f"{path} holds {raw.size} bytes, its index says "
                                        f"{epochs} epochs of {n} samples ({need} bytes): delete "
                                        f"{folder} and retrain to record it again")
            rows = raw[:need].reshape(epochs, row_bytes(n))  # rows past the index: a killed epoch
            correct[(model, split)] = np.unpackbits(rows, axis=1, count=n,
                                                    bitorder="little").astype(bool)
    return SampleRecord(np.arange(first, first + epochs), models, splits, correct)
