"""Compressed training (seed 000): how the quantiser's levels are used over training."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from src.analysis.figures import Options, Result
from src.analysis.grouping import grouping
from src.analysis.runs import Run
from src.analysis.style import Drawing, figure, legend_below

PANELS_PER_FILE = 8  # 4 rows of 2: a two-column figure; more settings go to further files


def level_fractions(runs: list[Run]) -> tuple[np.ndarray, np.ndarray, int]:
    """(steps, fractions [steps, levels], lowest level) over `runs` (seeds: fractions averaged
    at the steps all of them logged)."""
    per_run = []
    for run in runs:
        steps = [s for s in run.steps() if "level_counts" in s]
        counts = np.array([s["level_counts"] for s in steps], dtype=float)
        fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        per_run.append(({s["step"]: f for s, f in zip(steps, fractions, strict=True)},
                        run.summary["compression"]["levels"][0]))
    common = sorted(set.intersection(*(set(m) for m, _ in per_run)))
    width = max(len(next(iter(m.values()))) for m, _ in per_run)
    fractions = np.array([np.mean([m[s] for m, _ in per_run], axis=0) for s in common])
    return np.array(common), fractions.reshape(len(common), width), per_run[0][1]


def bin_usage(runs: list[Run], opts: Options, out_dir: Path) -> Result:
    """Stacked bars: the share of each level among all levels sent per log interval, one panel
    per setting (seeds averaged), every setting drawn (several files when there are many)."""
    from src.core.errors import ConfigError

    d = Drawing("bin_usage", "level share")
    have = []
    for run in runs:
        if not run.summary.get("compression"):
            d.leave_out(run, "no gradient compression")
        elif not any("level_counts" in s for s in run.steps()):
            d.leave_out(run, "no level counts in steps.jsonl")
        else:
            have.append(run)
    if not have:
        raise ConfigError("no run here logged level usage: train with a compression, e.g. "
                          "optimizer=compressed_sgd")
    groups = grouping(have, opts.group_by)
    items = groups.items()
    lows = [r.summary["compression"]["levels"][0] for r in have]
    highs = [r.summary["compression"]["levels"][1] for r in have]
    levels = list(range(min(lows), max(highs) + 1))
    cmap = plt.get_cmap("coolwarm", len(levels))
    colour = {level: cmap(i) for i, level in enumerate(levels)}
    paths, used = [], set()
    pages = [items[i:i + PANELS_PER_FILE] for i in range(0, len(items), PANELS_PER_FILE)]
    for page_index, page in enumerate(pages):
        d.series = []  # each file's JSON holds its own panels
        ncols = 1 if len(page) == 1 else 2
        nrows = math.ceil(len(page) / ncols)
        fig, axes = figure(nrows, ncols, panel_height=1.5, sharey=True)
        for ax in axes.flat[len(page):]:
            ax.set_visible(False)
        for ax, (name, members) in zip(axes.flat, page, strict=False):
            steps, fractions, low = level_fractions(members)
            bottom = np.zeros(len(steps))
            width = np.diff(steps, prepend=0) * 0.9
            for i in range(fractions.shape[1]):
                level = low + i
                if fractions[:, i].any():
                    ax.bar(steps, fractions[:, i], width=width, bottom=bottom, align="edge",
                           color=colour[level], lw=0)
                    bottom += fractions[:, i]
                    used.add(level)
            title = name if groups.keys else members[0].name.replace(",", ", ")
            ax.set_title(textwrap.fill(title, 44), fontsize=6, loc="left")  # a panel 3.3 in wide
            ax.set_ylim(0, 1)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            d.add_series(name, members, step=steps, fractions=fractions, lowest_level=low)
        for ax in axes[-1]:
            ax.set_xlabel("Optimizer step")
        for ax in axes[:, 0]:
            ax.set_ylabel("Share of levels")
        handles = [Patch(color=colour[v], label=str(v)) for v in levels if v in used]
        legend_below(fig, handles, title="level", ncol=min(len(handles), 9))
        stem = "bin_usage" if len(pages) == 1 else f"bin_usage_{page_index + 1}"
        paths += d.save(fig, out_dir, stem)
    if len(pages) > 1:
        d.notes.append(f"{len(items)} settings drawn over {len(pages)} files "
                       f"({PANELS_PER_FILE} panels each)")
    return Result(paths, d.summary_notes())

