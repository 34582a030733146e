"""What every figure shares: paper widths, fonts, legends outside the data, status markers, and
the files a figure writes (PNG, PDF and the JSON of exactly what it drew)."""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from src.analysis.runs import Run
from src.core.files import clean

ONE_COLUMN = 3.4  # inches: one column of a two-column paper
TWO_COLUMNS = 7.0
PANEL_HEIGHT = 2.1
STYLE = {"font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "legend.fontsize": 6,
         "legend.title_fontsize": 6, "xtick.labelsize": 6, "ytick.labelsize": 6,
         "lines.linewidth": 1.2, "axes.grid": True, "grid.alpha": 0.3, "savefig.dpi": 200,
         "axes.spines.top": False, "axes.spines.right": False}
matplotlib.rcParams.update(STYLE)  # figures are drawn in their own process (plots.py)

# How a run that did not finish normally is drawn: never as a value.
MARKERS = {"pruned": dict(marker="D", ms=3.5, mfc="none", mew=1.0),  # tune.py's pruner
           "diverged": dict(marker="x", ms=5, mew=1.2),
           "failed": dict(marker="v", ms=4, mfc="none", mew=1.0),
           "interrupted": dict(marker="v", ms=4, mfc="none", mew=1.0),
           "unfinished": dict(marker="o", ms=4, mfc="none", mew=1.0),
           "unconverged": dict(marker="s", ms=4, mfc="none", mew=1.0)}


def figure(nrows: int = 1, ncols: int = 1, width: float | None = None,
           panel_height: float = PANEL_HEIGHT, **kwargs: Any) -> tuple[plt.Figure, np.ndarray]:
    """A figure one column wide (one panel per row) or two columns wide (more), axes [rows,
    cols], laid out so that labels and an outside legend never overlap the data."""
    width = width or (ONE_COLUMN if ncols == 1 else TWO_COLUMNS)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, panel_height * nrows + 0.5),
                             squeeze=False, layout="constrained", **kwargs)
    return fig, axes


@dataclass
class Drawing:
    """Collects what a figure shows, for its JSON sidecar and the notes plots.py prints."""

    kind: str
    metric: str | None = None
    series: list[dict] = field(default_factory=list)
    marks: list[dict] = field(default_factory=list)
    left_out: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def leave_out(self, run: Run, reason: str) -> None:
        self.left_out.append({"run": str(run.path), "reason": reason})

    def add_series(self, label: str, runs: Sequence[Run], **values: Any) -> None:
        self.series.append({"label": label, "runs": [str(r.path) for r in runs],
                            **{k: as_list(v) for k, v in values.items()}})

    def mark(self, status: str, label: str, run: Run, **where: Any) -> None:
        self.marks.append({"status": status, "label": label, "run": str(run.path),
                           **{k: as_list(v) for k, v in where.items()}})

    def drawn_runs(self) -> set[str]:
        return {p for s in self.series for p in s["runs"]} | {m["run"] for m in self.marks}

    def summary_notes(self) -> list[str]:
        """One line per reason runs were left out, naming up to three of them."""
        reasons: dict[str, list[str]] = {}
        for item in self.left_out:
            reasons.setdefault(item["reason"], []).append(Path(item["run"]).name)
        lines = [f"left out {len(names)} run(s), {reason}: "
                 f"{', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                 for reason, names in reasons.items()]
        return [*self.notes, *lines]

    def save(self, fig: plt.Figure, out_dir: Path, stem: str) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf", out_dir / f"{stem}.json"]
        fig.savefig(paths[0])
        fig.savefig(paths[1])
        width, height = fig.get_size_inches()
        plt.close(fig)
        data = {"figure": self.kind, "metric": self.metric, "width_in": round(width, 2),
                "height_in": round(height, 2), "series": self.series, "marks": self.marks,
                "left_out": self.left_out, "notes": self.notes}
        paths[2].write_text(json.dumps(clean(data), indent=1) + "\n")
        return paths


def as_list(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "tolist") and not isinstance(value, str):
        return value.tolist()
    return value


def status_handles(counts: dict[str, int]) -> list[Line2D]:
    """Legend entries for the run statuses drawn as markers, with how many runs each."""
    return [Line2D([], [], ls="none", color="0.3", label=f"{status} ({n})", **MARKERS[status])
            for status, n in counts.items() if n]


def legend_below(fig: plt.Figure, handles: list, ncol: int | None = None,
                 title: str | None = None) -> None:
    """One legend for the whole figure, under the axes: it never covers data. Long labels are
    wrapped into one column, and the figure grows by the legend's height instead of squeezing
    the axes."""
    if not handles:
        return
    width = fig.get_size_inches()[0]
    chars = int(width * 13)  # characters of legend text per line at 6 pt
    longest = max(len(h.get_label()) for h in handles)
    ncol = ncol or max(1, min(len(handles), int(chars // (longest + 6)), 5))
    if longest + 6 > chars // ncol:
        ncol = max(1, chars // (longest + 6)) if longest + 6 <= chars else 1
    wrap = max(20, chars // ncol - 6)
    for h in handles:
        h.set_label(textwrap.fill(h.get_label(), wrap))
    lines = sum(max(1, h.get_label().count("\n") + 1) for h in handles[::ncol])
    fig.set_figheight(fig.get_figheight() + 0.13 * lines + (0.15 if title else 0.05))
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, frameon=False,
               title=title)


def finite(values: Sequence[float]) -> bool:
    return any(v is not None and math.isfinite(v) for v in values)
