"""Training curves and learning-rate stability: the generic figures of any sweep."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from src.analysis import labels
from src.analysis.figures import Options, Result
from src.analysis.grouping import colours, grouping, line_styles
from src.analysis.runs import Run, aggregate, history_frame
from src.analysis.style import (
    MARKERS,
    Drawing,
    figure,
    in_order,
    integer_axis,
    legend_below,
    readable_log_axis,
    status_handles,
)
from src.core.errors import ConfigError

ENDED_EARLY = ("pruned", "diverged", "failed", "interrupted")
POINTS = {"-": "o", "--": "s", ":": "^", "-.": "D"}  # a one-point series' marker, by line style
X_LABEL = {"epoch": "Epoch", "step": "Optimizer step"}


def no_history_reason(run: Run, metric: str) -> str:
    if run.history:
        return f"no {metric} in its history.jsonl"
    if run.summary.get("kind") == "pruning":
        return "a pruning experiment (its cells hold the training histories)"
    if run.status in ENDED_EARLY:
        return f"{run.status} before its first epoch ended"
    return "no history.jsonl records yet"


def band(ax, metric: str, x: np.ndarray, mean: np.ndarray, std: np.ndarray, colour: str,
         label: str, marker: str | None = None, ls: str = "-") -> dict[str, np.ndarray]:
    """A line with its +-std band, the band clipped to the metric's range (accuracy in
    [0, 100] %); returns what was drawn. A series of one point (a one-epoch run) is a marker
    with an error bar: a line of one point would be invisible."""
    low, high = labels.clip(metric, mean - std, mean + std)
    if len(x) == 1:
        marker = marker or POINTS[ls]  # a second setting of this colour: another shape
        ax.plot(x, mean, color=colour, label=label, marker=marker, ms=3, ls="none")
        if high[0] > low[0]:
            ax.vlines(x, low, high, color=colour, lw=0.8)  # its spread over seeds
    else:
        ax.plot(x, mean, color=colour, label=label, marker=marker, ms=3, ls=ls)
        ax.fill_between(x, low, high, color=colour, alpha=0.2, lw=0)
    return {"x": x, "mean": mean, "std": std, "low": low, "high": high, "marker": marker}


def curves(runs: list[Run], opts: Options, out_dir: Path) -> Result:
    """`metric` against epoch (or step), one line per setting: the mean over its seeds with a
    +-std band. A run that was pruned, diverged, failed or was interrupted ends with its status
    marker."""
    metric, x = opts.metric or "val_acc", opts.x
    d = Drawing("curves", metric)
    have = []
    for run in runs:
        if any(record.get(metric) is not None for record in run.history):
            have.append(run)
        else:
            d.leave_out(run, no_history_reason(run, metric))
    if not have:
        raise ConfigError(f"metric={metric} is in no run's history: use a history.jsonl key "
                          f"such as val_acc, train_loss or ema_<decay>/val_acc")
    groups = grouping(have, opts.group_by)
    palette = colours([name for name, _ in groups.items()])
    dashes = line_styles([name for name, _ in groups.items()])
    fig, axes = figure()
    ax = axes[0][0]
    counts: dict[tuple[str, str], int] = {}
    for name, members in groups.items():
        stats = aggregate(history_frame(members), [x], [metric])
        stats = stats.assign(_x=stats[x].astype(float)).sort_values("_x")
        stats = stats[stats[f"{metric}_count"] > 0]
        xs = stats["_x"].to_numpy()
        mean = labels.shown(metric, stats[f"{metric}_mean"].to_numpy())
        std = labels.shown(metric, stats[f"{metric}_std"].fillna(0.0).to_numpy())
        drawn = band(ax, metric, xs, mean, std, palette[name], name, ls=dashes[name])
        d.add_series(name, members, **drawn, n=stats[f"{metric}_count"].to_numpy())
        for run in members:
            if run.status in ENDED_EARLY:
                last = [r for r in run.history if r.get(metric) is not None][-1]
                value = labels.shown(metric, last[metric])
                ax.plot([last[x]], [value], ls="none", color=palette[name],
                        **MARKERS[run.status])
                counts[run.status, palette[name]] = counts.get((run.status, palette[name]),
                                                               0) + 1
                d.mark(run.status, name, run, x=last[x], y=value)
    ax.set_xlabel(X_LABEL.get(x, x))
    ax.set_ylabel(labels.metric_label(metric))
    integer_axis(ax)
    handles = [*in_order(ax, [name for name, _ in groups.items()]), *status_handles(counts)]
    legend_below(fig, handles, ncol=2)
    return Result(d.save(fig, out_dir, f"curves_{metric.replace('/', '_')}_vs_{x}"),
                  d.summary_notes())


def lr_stability(runs: list[Run], opts: Options, out_dir: Path) -> Result:
    """The final `metric` (summary.json) against the learning rate on a log axis, one curve per
    setting (mean and +-std over seeds). Runs without a final value (diverged, failed,
    unfinished, pruned) are marks at the worst edge of the axis, counted in the legend, never
    values."""
    metric, lr = opts.metric or "val_acc", "optimizer.lr"
    d = Drawing("lr_stability", metric)
    have = []
    for run in runs:
        rate = run.config.get(lr)
        if not isinstance(rate, int | float):
            d.leave_out(run, "no optimizer.lr (not an optimizer run)")
        elif rate <= 0:
            d.leave_out(run, "a learning rate <= 0 has no place on a log axis")
        elif run.status == "completed" and metric not in run.summary.get("metrics", {}):
            d.leave_out(run, f"no {metric} in its summary.json")
        else:
            have.append(run)
    if not have:
        raise ConfigError("no run here has an optimizer.lr: lr_stability needs a learning-rate "
                          "sweep, e.g. train.py -m optimizer.lr=0.01,0.1,1")
    if not any(metric in r.summary.get("metrics", {}) for r in have):
        raise ConfigError(f"metric={metric} is in no run's summary.json: use a final metric "
                          f"such as val_acc, test_acc or ema_<decay>/test_loss")
    groups = grouping(have, opts.group_by, axes=[lr])
    palette = colours([name for name, _ in groups.items()])
    dashes = line_styles([name for name, _ in groups.items()])
    fig, axes = figure()
    ax = axes[0][0]
    edge = ax.get_xaxis_transform()  # x in data, y in axes: 0 is the bottom, 1 the top
    worst = 0.0 if labels.higher_is_better(metric) else 1.0
    statuses = ("pruned", "diverged", "failed", "interrupted", "unfinished")
    counts: dict[tuple[str, str], int] = {}
    unlined: dict[str, str] = {}
    for name, members in groups.items():
        by_lr: dict[float, list[float]] = {}
        for run in members:
            value = run.summary.get("metrics", {}).get(metric)
            if isinstance(value, int | float) and math.isfinite(value):
                by_lr.setdefault(float(run.config[lr]), []).append(
                    labels.shown(metric, value))
                continue
            status = run.status if run.status in statuses else "failed"
            counts[status, palette[name]] = counts.get((status, palette[name]), 0) + 1
            ax.plot([run.config[lr]], [worst], ls="none", color=palette[name], clip_on=False,
                    transform=edge, **MARKERS[status])
            d.mark(status, name, run, x=run.config[lr])
        xs = np.array(sorted(by_lr))
        if len(xs):
            mean = np.array([np.mean(by_lr[v]) for v in xs])
            std = np.array([np.std(by_lr[v], ddof=1) if len(by_lr[v]) > 1 else 0.0
                            for v in xs])
            drawn = band(ax, metric, xs, mean, std, palette[name], name, marker="o",
                         ls=dashes[name])
            d.add_series(name, [r for r in members if r.config[lr] in by_lr], **drawn,
                         n=[len(by_lr[v]) for v in xs])
        else:  # no line of its own: named in its marks' legend entry
            unlined[palette[name]] = name
    ax.set_xscale("log")
    readable_log_axis(ax, "x")
    ax.set_xlabel("Learning rate")
    ax.set_ylabel(f"Final {labels.metric_label(metric, capital=False)}")
    handles = [*in_order(ax, [name for name, _ in groups.items()]),
               *status_handles(counts, unlined)]
    legend_below(fig, handles, ncol=2)
    if any(counts.values()):
        d.notes.append(f"runs without a final value are marked at the "
                       f"{'bottom' if worst == 0.0 else 'top'} edge of the axes")
    return Result(d.save(fig, out_dir, f"lr_stability_{metric.replace('/', '_')}"),
                  d.summary_notes())
