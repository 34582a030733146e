"""Regimes of SGD (seed 001): the (batch size, learning rate) phase diagram and the weight
displacement against temperature."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from src.analysis import labels
from src.analysis.figures import Options, Result
from src.analysis.grouping import colours, grouping, line_styles, safe
from src.analysis.runs import Run
from src.analysis.style import (
    MARKERS,
    STATUS_COLOUR,
    Drawing,
    figure,
    legend_below,
    readable_log_axis,
    status_handles,
)
from src.core.errors import ConfigError

SWEPT = ("batch_size", "task.dt", "task.temp")
CONVERGED = ("zero_loss", "margin")  # a run stopped for these reasons fitted its data


def state(run: Run) -> str:
    """converged | unconverged (stopped by a budget: wall time, steps, passes) | pruned (by
    tune.py's pruner) | diverged | failed | unfinished."""
    if run.status == "completed":
        return "converged" if run.summary.get("stop_reason") in CONVERGED else "unconverged"
    return run.status if run.status in ("pruned", "diverged", "unfinished") else "failed"


def phase_diagram(runs: list[Run], opts: Options, out_dir: Path) -> Result:
    """`metric` (test error) over the (B, dt) plane, log-log, mean over the converged seeds of
    each cell, with iso-temperature lines dt = T B h; runs stopped by a budget, diverged or
    failed are drawn with their own marks. Then the final ||w - w0|| against T, one line per B.
    One pair of figures per setting of the other keys that differ."""
    metric = opts.metric or "test_err"
    d = Drawing("phase_diagram", metric)
    have = []
    for run in runs:
        if "temp" in run.summary:
            have.append(run)
        elif run.config.get("choice.task") == "regimes":
            d.leave_out(run, "no summary with B, dt and T (it stopped before training)")
        else:
            d.leave_out(run, "not a regimes run (task=regimes)")
    if not have:
        raise ConfigError("no run here is a finished regimes run: train with task=regimes or "
                          "experiment=regimes_* first")
    if not any(metric in r.summary.get("metrics", {}) for r in have):
        raise ConfigError(f"metric={metric} is not a regimes metric here: use test_err, "
                          f"test_loss, train_nd, dnorm or another summary.json metric")
    result = Result()
    groups = grouping(have, opts.group_by, axes=SWEPT)
    for name, members in groups.items():
        rows = pd.DataFrame([{"B": r.summary["batch_size"], "dt": r.summary["dt"],
                              "T": r.summary["temp"], "h": r.summary["width"],
                              "state": state(r), "run": r,
                              "value": r.summary.get("metrics", {}).get(metric),
                              "dnorm": r.summary.get("metrics", {}).get("dnorm")}
                             for r in members])
        title = name if groups.keys else None
        stem = "phase_diagram" + (f"_{safe(name)}" if groups.keys else "")
        result.paths += plane(rows, metric, title, out_dir, stem, d)
        result.paths += displacement(rows, title, out_dir,
                                     stem.replace("phase_diagram", "phase_norm"), d)
    result.notes += d.summary_notes()
    return result


def plane(rows: pd.DataFrame, metric: str, title: str | None, out_dir: Path, stem: str,
          d: Drawing) -> list[Path]:
    d.series, d.marks = [], []
    conv = rows[rows["state"] == "converged"].dropna(subset=["value"])
    cells = conv.groupby(["B", "dt"], as_index=False).agg(value=("value", "mean"),
                                                           n=("value", "size"))
    fig, axes = figure(panel_height=2.4)
    ax = axes[0][0]
    if len(cells):
        shown = labels.shown(metric, cells["value"].to_numpy())
        low, high, words = labels.colour_range(metric, shown)
        points = ax.scatter(cells["B"], cells["dt"], c=shown, marker="s", s=28,
                            cmap="viridis", edgecolors="none", zorder=3, vmin=low, vmax=high)
        fig.colorbar(points, ax=ax, label=f"{labels.metric_label(metric)}{words}", shrink=0.9)
        d.add_series("converged", list(conv["run"]), B=cells["B"], dt=cells["dt"],
                     value=shown, n=cells["n"])
    counts = {}
    for status in ("unconverged", "pruned", "diverged", "failed", "unfinished"):
        part = rows[rows["state"] == status]
        colour = "#d62728" if status == "diverged" else STATUS_COLOUR
        counts[status, colour] = len(part)
        if len(part):
            ax.plot(part["B"], part["dt"], ls="none", color=colour, zorder=4, **MARKERS[status])
            for _, r in part.iterrows():
                d.mark(status, status, r["run"], B=r["B"], dt=r["dt"])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    b = np.geomspace(rows["B"].min(), max(rows["B"].max(), rows["B"].min() * 2), 50)
    h = float(rows["h"].iloc[0])
    top, bottom = rows["dt"].max() * 1.5, rows["dt"].min() / 1.5
    ax.set_ylim(bottom, top)
    for exponent in range(math.floor(math.log10(rows["T"].min())),
                          math.ceil(math.log10(rows["T"].max())) + 1):
        temp = 10.0**exponent
        ax.plot(b, temp * b * h, "--", color="gray", lw=0.6, zorder=1)
        at = min(b[-1], top / (temp * h)) / 1.4  # label where the line is still visible
        if at >= b[0] and bottom <= temp * at * h <= top:
            ax.text(at, temp * at * h, f"T=1e{exponent}", fontsize=5, color="gray",
                    ha="right", va="bottom", clip_on=True)
    ax.set_xlabel("Batch size B")
    ax.set_ylabel("Learning rate dt")
    if title:
        ax.set_title(title)
    legend_below(fig, status_handles(counts), ncol=4)
    return d.save(fig, out_dir, stem)


def displacement(rows: pd.DataFrame, title: str | None, out_dir: Path, stem: str,
                 d: Drawing) -> list[Path]:
    d.series, d.marks = [], []
    metric, d.metric = d.metric, "dnorm"
    fig, axes = figure(panel_height=2.4)
    ax = axes[0][0]
    batches = sorted(rows["B"].unique())
    palette = colours([f"B={b}" for b in batches])
    dashes = line_styles([f"B={b}" for b in batches])
    cmap_handles = []
    for batch in batches:
        part = rows[(rows["B"] == batch)]
        conv = part[part["state"] == "converged"].dropna(subset=["dnorm"])
        cells = conv.groupby("T", as_index=False)["dnorm"].mean().sort_values("T")
        colour = palette[f"B={batch}"]
        if len(cells):
            ax.plot(cells["T"], cells["dnorm"], marker="o", ms=2, color=colour,
                    ls=dashes[f"B={batch}"])
        late = part[part["state"] == "unconverged"].dropna(subset=["dnorm"])
        if len(late):
            ax.plot(late["T"], late["dnorm"], ls="none", color=colour, **MARKERS["unconverged"])
        cmap_handles.append(Line2D([], [], color=colour, marker="o", ms=2, label=f"B={batch}",
                                   ls=dashes[f"B={batch}"]))
        d.add_series(f"B={batch}", list(conv["run"]), T=cells["T"], dnorm=cells["dnorm"])
        for _, r in late.iterrows():
            d.mark("unconverged", f"B={batch}", r["run"], T=r["T"], dnorm=r["dnorm"])
    ax.set_xscale("log")
    ax.set_yscale("log")
    readable_log_axis(ax, "x")
    readable_log_axis(ax, "y")
    ax.set_xlabel("Temperature T = dt / (B h)")
    ax.set_ylabel("Final ||w - w0||")
    if title:
        ax.set_title(title)
    late = {("unconverged", palette[f"B={b}"]): int(((rows["state"] == "unconverged")
                                                     & (rows["B"] == b)).sum()) for b in batches}
    legend_below(fig, [*cmap_handles, *status_handles(late)], ncol=4)
    paths = d.save(fig, out_dir, stem)
    d.metric = metric
    return paths
