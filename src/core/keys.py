"""The grammar of config and metric keys.

Config keys are flattened with dots ('optimizer.lr'). Metrics are named
`<model/>[best/]<split>_<loss|acc>`: the raw model carries no prefix, an averaged one its name
('ema_0.9995/val_acc'), and `best/` marks the state of lowest validation loss.
"""

from __future__ import annotations

import math
from typing import Any

RAW = "model"  # name of the raw (non-averaged) model; its metrics carry no prefix
SPLITS = ("train", "val", "test")

# Settings that change where or how visibly a run happens, not its results: left out of a run's
# config digest, of a study's identity and of the settings figures group runs by.
RESULT_NEUTRAL = ("device", "data_dir", "dataset.download", "dataset.source.root",
                  "dataset.source.download", "trainer.progress", "logger",
                  "trainer.keep_epochs", "trainer.full_train_eval", "trainer.history_names",
                  "trainer.track_samples", "trainer.track_splits",
                  "dataset.checksums", "dataset.source.checksums", "pruning.speed",
                  "compression.fused")


def neutral(key: str, keys: tuple[str, ...] = RESULT_NEUTRAL) -> bool:
    """Whether a flattened config key is one of `keys` or lies below one (a.b.c below a.b)."""
    return key in keys or any(key.startswith(f"{k}.") for k in keys)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}, 'c': [1, 2]} -> {'a.b': 1, 'c': [1, 2]}: lists stay values; an empty
    mapping leaves no key."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}{k}." if isinstance(v, dict) else f"{prefix}{k}"))
    return out


def metric_prefix(name: str) -> str:
    """'' for the raw model, '<name>/' for an averaged one (e.g. 'ema_0.9995/')."""
    return "" if name == RAW else f"{name}/"


def split_metrics(models: list[str]) -> list[str]:
    """Every `<model/>[best/]<split>_<loss|acc>` key of these models (summary.json's metrics)."""
    return [f"{metric_prefix(n)}{best}{split}_{m}" for n in models for best in ("", "best/")
            for split in SPLITS for m in ("loss", "acc")]


def worst_objective(name: str) -> float:
    """What a sweep records for a diverged run: 0 for accuracies, +inf for losses."""
    return 0.0 if name.endswith("acc") else math.inf
