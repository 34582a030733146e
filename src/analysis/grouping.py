"""Which runs are one setting (seeds of it) and which are different settings.

Runs are pooled as seeds only when they differ in nothing but their seed (`seed`, `init_seed`)
and settings that do not change results (where and how visibly a run happens). Everything else
that differs is a group key: by default the smallest set of keys that tells the settings apart,
preferring the task, dataset and model, then what was typed on the command line, then the other
config-group choices (`optimizer=momentum` rather than the optimizer's class and momentum); a
key that the kept ones determine is left out. An explicit `group_by` that leaves other
differences pooled is refused, naming them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

from src.analysis import labels
from src.analysis.runs import Run
from src.core.errors import ConfigError
from src.core.files import GROUPS
from src.core.keys import RESULT_NEUTRAL, neutral

SEEDS = ("seed", "init_seed")
# Besides RESULT_NEUTRAL: what is logged or evaluated when, and what a sweeper is told.
NEUTRAL = (*RESULT_NEUTRAL, "objective", "trainer.log_every", "trainer.checkpoint_every",
           "trainer.eval_batch_size", "trainer.train_eval_every", "task.run")
MISSING = "<missing>"  # a key a run's config does not have (another kind of run)
# The choices that say what problem a run learns: a difference in them is always named, even
# where another key would also tell the runs apart.
PROBLEM = ("choice.task", "choice.dataset", "choice.model")


def token(value: Any) -> str:
    """A value as a comparable string (NaN, None and missing are one 'missing')."""
    if value is None or (isinstance(value, float) and value != value):
        return MISSING
    return json.dumps(value, default=str, sort_keys=True)


def settings_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run, one column per config key that could tell settings apart (tokens)."""
    rows = [{k: token(v) for k, v in r.config.items() if not neutral(k, NEUTRAL)} for r in runs]
    return pd.DataFrame(rows).fillna(MISSING)


def override_keys(runs: Sequence[Run]) -> list[str]:
    """The config columns the runs' command lines set, in the order first typed."""
    keys: list[str] = []
    for r in runs:
        for override in r.overrides:
            key = override.split("=", 1)[0].lstrip("+~")
            column = f"choice.{key}" if key in GROUPS else key
            if column not in keys:
                keys.append(column)
    return keys


def determined(frame: pd.DataFrame, by: list[str], key: str) -> bool:
    """True if `key` takes one value within every group of equal `by` values."""
    if not by:
        return frame[key].nunique() <= 1
    return bool((frame.groupby(by)[key].nunique() <= 1).all())


def varying(frame: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    return [c for c in frame.columns if c not in SEEDS and c not in exclude
            and frame[c].nunique() > 1]


def distinguishing_keys(runs: Sequence[Run], exclude: Sequence[str] = ()) -> list[str]:
    """The smallest set of keys (in order of preference) whose values tell the settings apart.

    `exclude`: keys a figure plots along (a learning-rate axis, a panel per schedule); they and
    whatever they determine (the schedule's own settings) are not group keys.
    """
    frame = settings_frame(runs)
    candidates = varying(frame)
    problem = [k for k in PROBLEM if k in candidates]  # what is learned comes first
    typed = [k for k in override_keys(runs) if k in candidates and k not in problem]
    choices = sorted(k for k in candidates if k.startswith("choice.")
                     and k not in typed and k not in problem)
    rest = sorted(k for k in candidates if k not in typed and k not in choices
                  and k not in problem)
    kept = [k for k in exclude if k in frame.columns]
    for key in [*problem, *typed, *choices, *rest]:
        if key not in kept and not determined(frame, kept, key):
            kept.append(key)
    return [k for k in kept if k not in exclude]


def check_pooled(runs: Sequence[Run], keys: list[str], also: Sequence[str] = ()) -> None:
    """ConfigError if runs grouped by `keys` (+ `also`, e.g. a figure's axis) differ in more."""
    frame = settings_frame(runs)
    missing = [k for k in keys if k not in frame.columns]
    if missing:
        raise ConfigError(f"group_by={keys}: {', '.join(missing)} is not a setting of these "
                          f"runs: use config keys such as optimizer.lr or choice.optimizer")
    by = [*keys, *(k for k in also if k in frame.columns)]
    left = distinguishing_keys(runs, exclude=by)
    if left:
        shown = ", ".join(left[:6]) + (" ..." if len(left) > 6 else "")
        raise ConfigError(f"runs grouped by {keys or 'nothing'} also differ in {shown}: pooling "
                          f"them would mix settings as if they were seeds; add them to "
                          f"group_by=[...] or narrow runs=")


def natural(value: str) -> tuple:
    """Sort key: numbers by value, the rest as text."""
    try:
        return (0, float(json.loads(value)), "")
    except (ValueError, TypeError):
        return (1, 0.0, value)


class Grouping:
    """Runs split into settings by `keys`, with a label and a colour per setting."""

    def __init__(self, runs: Sequence[Run], keys: list[str]) -> None:
        self.keys = keys
        frame = settings_frame(runs)
        for k in keys:
            if k not in frame:
                frame[k] = MISSING
        self.groups: dict[tuple, list[Run]] = {}
        for run, (_, row) in zip(runs, frame.iterrows(), strict=True):
            self.groups.setdefault(tuple(row[k] for k in keys), []).append(run)
        self.order = sorted(self.groups, key=lambda t: tuple(natural(v) for v in t))

    def label(self, values: tuple) -> str:
        if not self.keys:
            return "all runs"
        parts = []
        for key, value in zip(self.keys, values, strict=True):
            shown = json.loads(value) if value != MISSING else None
            parts.append(labels.setting_label(key, shown))
        return ", ".join(parts)

    def items(self) -> list[tuple[str, list[Run]]]:
        return [(self.label(v), self.groups[v]) for v in self.order]


PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")


def colours(names: Sequence[str]) -> dict[str, str]:
    """One colour per setting, the same in every panel of a figure (repeats after ten)."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def safe(text: str) -> str:
    """A label as a file-name part."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")


def grouping(runs: Sequence[Run], group_by: Sequence[str] | None,
             axes: Sequence[str] = ()) -> Grouping:
    """Runs split into settings: by `group_by` (checked: nothing else may differ but `axes`,
    the keys a figure plots along), or by the keys that tell them apart."""
    if group_by is None:
        keys = distinguishing_keys(runs, exclude=axes)
        # Legends read best with the config-group choices first: "optimizer=sgd, lr=0.1".
        return Grouping(runs, sorted(keys, key=lambda k: not k.startswith("choice.")))
    check_pooled(runs, list(group_by), also=axes)
    return Grouping(runs, list(group_by))
