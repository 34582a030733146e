"""Which runs are one setting (seeds of it) and which are different settings, and what each
setting is called.

Runs are pooled as seeds only when they differ in nothing but their seed (`seed`, `init_seed`)
and settings that do not change results (where and how visibly a run happens). Everything else
that differs is a group key: by default the smallest set of keys that tells the settings apart,
preferring the task, dataset and model, then what was typed on the command line, then the other
config-group choices (`optimizer=momentum` rather than the optimizer's class and momentum); a
key that the kept ones determine is left out. An explicit `group_by` that leaves other
differences pooled is refused, naming them.

A figure's axes (a learning-rate axis, a panel per schedule) are never group keys; a config
group that is an axis takes its own settings with it (a panel per schedule: the schedules'
milestones). An axis does not stand for anything else, even where its values happen to tell
the settings apart (every optimizer of a folder at its own learning rate).

A setting's label names the keys that tell the settings apart and, beyond them, every other
setting in which it differs from what most settings share (batch_size=64 of one tune.py trial
among runs of 128), with the names users type (scheduler=cosine, optimizer.lr=0.1).
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


def axis_keys(frame: pd.DataFrame, axes: Sequence[str]) -> list[str]:
    """The axes and, for a config-group choice that is an axis, that group's own settings."""
    groups = tuple(f"{a.removeprefix('choice.')}." for a in axes if a.startswith("choice."))
    return [*axes, *(c for c in frame.columns if groups and c.startswith(groups))]


def distinguishing_keys(runs: Sequence[Run], exclude: Sequence[str] = (),
                        by: Sequence[str] = ()) -> list[str]:
    """The smallest set of keys (in order of preference) whose values tell the settings apart.

    `exclude`: keys a figure plots along (axis_keys); they are not group keys and do not stand
    for others. `by`: keys the settings are already grouped by (group_by): what they determine
    is not named again.
    """
    frame = settings_frame(runs)
    skip = set(axis_keys(frame, exclude))
    candidates = [k for k in varying(frame) if k not in skip]
    problem = [k for k in PROBLEM if k in candidates]  # what is learned comes first
    typed = [k for k in override_keys(runs) if k in candidates and k not in problem]
    choices = sorted(k for k in candidates if k.startswith("choice.")
                     and k not in typed and k not in problem)
    rest = sorted(k for k in candidates if k not in typed and k not in choices
                  and k not in problem)
    kept = [k for k in by if k in frame.columns]
    for key in [*problem, *typed, *choices, *rest]:
        if key not in kept and not determined(frame, kept, key):
            kept.append(key)
    return [k for k in kept if k not in by]


def check_pooled(runs: Sequence[Run], keys: list[str], also: Sequence[str] = ()) -> None:
    """ConfigError if runs grouped by `keys` (and a figure's axes `also`) differ in more."""
    frame = settings_frame(runs)
    missing = [k for k in keys if k not in frame.columns]
    if missing:
        raise ConfigError(f"group_by={keys}: {', '.join(missing)} is not a setting of these "
                          f"runs: use config keys such as optimizer.lr or choice.optimizer")
    left = distinguishing_keys(runs, exclude=also, by=keys)
    if left:
        shown = ", ".join(left[:6]) + (" ..." if len(left) > 6 else "")
        raise ConfigError(f"runs grouped by {keys or 'nothing'} also differ in {shown}: pooling "
                          f"them would mix settings as if they were seeds; add them to "
                          f"group_by=[...] or narrow runs=")


def described_keys(frame: pd.DataFrame, keys: list[str], axes: Sequence[str],
                   typed: list[str]) -> list[str]:
    """Every key a label may name: the group keys, then the other settings that differ, less
    what the named config-group choices bring with them (their classes, their own defaults,
    the choices they imply) and the axes; in the order: choices, typed, the rest."""
    skip = set(axis_keys(frame, axes))
    shown_choices = [k for k in keys if k.startswith("choice.")]
    implied = [k for k in varying(frame) if k.startswith("choice.") and k not in keys
               and shown_choices and determined(frame, shown_choices, k)]
    inside = tuple(f"{k.removeprefix('choice.')}." for k in [*shown_choices, *implied])
    extra = []
    for key in varying(frame):
        if key in keys or key in skip or key in implied or key.endswith(("_target_",
                                                                          "_partial_")):
            continue
        if inside and key.startswith(inside) and determined(frame, shown_choices, key):
            continue  # a default of the optimizer (or compression ...) the label names
        extra.append(key)
    order = {k: i for i, k in enumerate(typed)}
    extra.sort(key=lambda k: (not k.startswith("choice."), order.get(k, len(order)), k))
    return [*keys, *extra]


def common_value(column: pd.Series) -> str | None:
    """The value most settings share, or None when no value is shared by more settings than
    any other (then every label names the key)."""
    counts = column.value_counts()
    if len(counts) < 2 or counts.iloc[0] < 2 or counts.iloc[0] == counts.iloc[1]:
        return None if len(counts) > 1 else counts.index[0]
    return counts.index[0]


def natural(value: str) -> tuple:
    """Sort key: numbers by value, the rest as text."""
    try:
        return (0, float(json.loads(value)), "")
    except (ValueError, TypeError):
        return (1, 0.0, value)


class Grouping:
    """Runs split into settings by `keys`, with a label per setting (see the module's
    docstring); `axes`: the keys the figure plots along."""

    def __init__(self, runs: Sequence[Run], keys: list[str], axes: Sequence[str] = ()) -> None:
        self.keys = keys
        frame = settings_frame(runs)
        for k in keys:
            if k not in frame:
                frame[k] = MISSING
        self.groups: dict[tuple, list[Run]] = {}
        first: dict[tuple, int] = {}
        for i, (run, (_, row)) in enumerate(zip(runs, frame.iterrows(), strict=True)):
            values = tuple(row[k] for k in keys)
            self.groups.setdefault(values, []).append(run)
            first.setdefault(values, i)
        self.order = sorted(self.groups, key=lambda t: tuple(natural(v) for v in t))
        settings = frame.iloc[[first[v] for v in self.order]].reset_index(drop=True)
        described = described_keys(frame, keys, axes, override_keys(runs)) if keys else []
        # a config-group choice that tells the settings apart is always named (what a run is:
        # optimizer=adam); every other key where its value is not what most settings share
        always = [k for k in keys if k.startswith("choice.") and k not in PROBLEM]
        common = {k: common_value(settings[k]) for k in described if k not in always}
        self.labels = {}
        for values, (_, row) in zip(self.order, settings.iterrows(), strict=True):
            parts = [k for k in described if k in always or (
                row[k] != common[k] and (row[k] != MISSING or k in keys))]
            parts = parts or keys  # the setting most share: named by its keys
            self.labels[values] = ", ".join(
                labels.setting_label(k, json.loads(row[k]) if row[k] != MISSING else None)
                for k in parts) if parts else "all runs"

    def label(self, values: tuple) -> str:
        return self.labels[values]

    def items(self) -> list[tuple[str, list[Run]]]:
        return [(self.label(v), self.groups[v]) for v in self.order]


PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")


def colours(names: Sequence[str]) -> dict[str, str]:
    """One colour per setting, the same in every panel of a figure (repeats after ten: a figure
    of more settings tells them apart by line_styles too)."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


DASHES = ("-", "--", ":", "-.")


def line_styles(names: Sequence[str]) -> dict[str, str]:
    """A line style per setting: solid for the first ten colours, then dashed, dotted, ...,
    so that no two settings share both colour and style (up to forty)."""
    return {name: DASHES[(i // len(PALETTE)) % len(DASHES)] for i, name in enumerate(names)}


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
        return Grouping(runs, sorted(keys, key=lambda k: not k.startswith("choice.")), axes)
    check_pooled(runs, list(group_by), also=axes)
    return Grouping(runs, list(group_by), axes)
