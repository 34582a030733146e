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
from matplotlib.artist import Artist
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import to_hex
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    MaxNLocator,
    NullFormatter,
    NullLocator,
)

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
        """PNG, PDF and the JSON of what was drawn, with what a reader sees of it: the legend's
        entries and size, and each axes' scales, limits and labelled ticks."""
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf", out_dir / f"{stem}.json"]
        fig.savefig(paths[0])
        fig.savefig(paths[1])
        width, height = fig.get_size_inches()
        seen = layout(fig)
        plt.close(fig)
        data = {"figure": self.kind, "metric": self.metric, "width_in": round(width, 2),
                "height_in": round(height, 2), "series": self.series, "marks": self.marks,
                "left_out": self.left_out, "notes": self.notes, **seen}
        paths[2].write_text(json.dumps(clean(data), indent=1) + "\n")
        return paths


LINESTYLES = {"solid": "-", "dashed": "--", "dotted": ":", "dashdot": "-."}


def look(artist: Artist) -> dict[str, Any]:
    """How an artist appears: a line (colour, line style, marker) or an area (colour, alpha)."""
    if isinstance(artist, Line2D):
        return {"kind": "line", "color": to_hex(artist.get_color()),
                "linestyle": "none" if artist.get_linestyle() in ("None", "none", "")
                else artist.get_linestyle(), "marker": str(artist.get_marker()).lower()}
    if isinstance(artist, Patch) and not artist.get_fill():  # an outline: a histogram's steps
        return {"kind": "line", "color": to_hex(artist.get_edgecolor()),
                "linestyle": LINESTYLES.get(artist.get_linestyle(), artist.get_linestyle()),
                "marker": "none"}
    if isinstance(artist, Patch):
        return {"kind": "area", "color": to_hex(artist.get_facecolor(), keep_alpha=True)}
    if isinstance(artist, LineCollection) and len(artist.get_color()):  # error bars
        return {"kind": "line", "color": to_hex(artist.get_color()[0]),
                "linestyle": "-", "marker": "none"}
    if isinstance(artist, PolyCollection) and len(artist.get_facecolor()):
        return {"kind": "area", "color": to_hex(artist.get_facecolor()[0], keep_alpha=True)}
    return {"kind": type(artist).__name__}


def layout(fig: plt.Figure) -> dict[str, Any]:
    """What the figure shows a reader, for its JSON: legend entries (label and look), every
    drawn line and area's look, the legend's and the data axes' heights, and per axes its
    scales, limits, labelled ticks and colour range."""
    fig.canvas.draw()
    inch = fig.dpi
    entries, legend_h = [], 0.0
    for legend in fig.legends:
        legend_h = max(legend_h, legend.get_window_extent().height / inch)
        for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
            entries.append({"label": text.get_text().replace("\n", " "), **look(handle)})
    axes, drawn = [], []
    for ax in fig.axes:
        if not ax.get_visible() or ax.get_label() == "<colorbar>":
            continue
        for artist in [*ax.lines, *ax.collections, *ax.patches]:
            empty = isinstance(artist, Line2D) and len(artist.get_xdata()) == 0
            if artist.get_visible() and not empty:
                drawn.append(look(artist))
        for image in ax.images:  # a colour per value shown (a barcode's correct, wrong)
            values = np.unique(np.ma.compressed(np.ma.masked_invalid(image.get_array())))
            drawn += [{"kind": "area", "color": to_hex(image.to_rgba(v), keep_alpha=True)}
                      for v in values[:32]]
        images = [c for c in ax.collections if c.get_array() is not None]
        axes.append({
            "height_in": round(ax.get_window_extent().height / inch, 3),
            "xscale": ax.get_xscale(), "yscale": ax.get_yscale(),
            "xlim": list(ax.get_xlim()), "ylim": list(ax.get_ylim()),
            "xticks": labelled(ax.get_xticklabels(), ax.get_xlim()),
            "yticks": labelled(ax.get_yticklabels(), ax.get_ylim()),
            "clim": list(images[0].get_clim()) if images else None})
    return {"legend": {"entries": entries, "height_in": round(legend_h, 3)}, "drawn": drawn,
            "axes": axes, "cut_texts": cut_texts(fig)}


def cut_texts(fig: plt.Figure) -> list[str]:
    """Texts (titles, labels, tick labels, legend entries) that reach beyond the figure's edges,
    where the file cuts them off."""
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    texts = [*fig.texts, *(t for legend in fig.legends for t in legend.get_texts())]
    for ax in fig.axes:
        if ax.get_visible():
            texts += [ax.title, ax._left_title, ax._right_title]
        if ax.get_visible() and ax.axison:  # an image's axes may draw no axis at all
            texts += [ax.xaxis.label, ax.yaxis.label]
            low, high = sorted(ax.get_xlim())  # tick labels drawn: those inside the limits
            texts += [t for t in ax.get_xticklabels() if low <= t.get_position()[0] <= high]
            low, high = sorted(ax.get_ylim())
            texts += [t for t in ax.get_yticklabels() if low <= t.get_position()[1] <= high]
    cut = []
    for text in texts:
        if not text.get_visible() or not text.get_text().strip():
            continue
        extent = text.get_window_extent(renderer)
        if (extent.x0 < box.x0 - 1 or extent.x1 > box.x1 + 1 or extent.y0 < box.y0 - 1
                or extent.y1 > box.y1 + 1):
            cut.append(text.get_text())
    return cut


def labelled(ticks: list, limits: tuple[float, float]) -> list[str]:
    """The tick labels a reader sees: non-empty and inside the axis' limits."""
    low, high = sorted(limits)
    return [t.get_text() for t in ticks
            if t.get_text() and low <= t.get_position()[0 if t.get_position()[1] == 0 else 1]
            <= high] if ticks else []


def readable_log_axis(ax: plt.Axes, which: str = "y") -> None:
    """A log axis that labels at least two ticks: on a range of under a decade, ticks at
    1, 2, 5 (or every digit) times a power of ten, written plainly; else the limits."""
    axis = ax.yaxis if which == "y" else ax.xaxis
    low, high = sorted(ax.get_ylim() if which == "y" else ax.get_xlim())
    powers = [10.0**k for k in range(math.floor(math.log10(low)),
                                     math.ceil(math.log10(high)) + 1)]
    if sum(low <= v <= high for v in powers) >= 2:
        return
    for digits in ((1, 2, 5), tuple(range(1, 10))):
        ticks = [d * v for v in powers for d in digits if low <= d * v <= high]
        if len(ticks) >= 2:
            break
    else:
        ticks = [float(f"{low:.2g}"), float(f"{high:.2g}")]
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


def as_list(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "tolist") and not isinstance(value, str):
        return value.tolist()
    return value


STATUS_COLOUR = "0.3"  # a status mark that belongs to no one setting (the phase diagram's)


def status_handles(counts: dict[tuple[str, str], int],
                   named: dict[str, str] | None = None) -> list[Line2D]:
    """Legend entries for the run statuses drawn as markers, with how many runs each: one per
    (status, colour) as drawn, so that legend and plot agree (a diverged run of each setting
    in that setting's colour). named: colour -> the setting drawn by marks alone, named in its
    marks' entry."""
    named = named or {}
    return [Line2D([], [], ls="none", color=colour, label=f"{status} ({n})" + (
        f": {named[colour]}" if colour in named else ""), **MARKERS[status])
            for (status, colour), n in counts.items() if n]


LINE_IN = 0.13  # inches per legend line at 6 pt
BELOW_AT_MOST = 0.6  # a legend under the axes is at most this share of their height


def in_order(ax: plt.Axes, names: Sequence[str]) -> list:
    """The axes' legend handles in the order of `names` (the settings' order), whatever the
    kind of artist drew each (a line, or a marker with error bars for one point)."""
    handles, texts = ax.get_legend_handles_labels()
    by_name = dict(zip(texts, handles, strict=True))
    return [by_name[n] for n in names if n in by_name]


def integer_axis(ax: plt.Axes) -> None:
    """An axis of epochs: integer ticks, and at least one unit wide (one epoch's point sits in
    the middle, not at 0.945 ... 1.05)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    low, high = ax.get_xlim()
    if high - low < 1:
        middle = (low + high) / 2
        ax.set_xlim(middle - 0.5, middle + 0.5)


def legend_below(fig: plt.Figure, handles: list, ncol: int | None = None,
                 title: str | None = None) -> None:
    """One legend for the whole figure, outside the data. Under the axes when it is no taller
    than they are (long labels wrapped, the figure grows by the legend's height); otherwise
    beside them, in a figure two columns wide, with the axes at least as tall as the legend:
    a legend never outgrows its axes."""
    if not handles:
        return
    width = fig.get_size_inches()[0]
    axes_h = fig.get_figheight() - 0.5
    lines, ncol = legend_lines(handles, width, ncol)
    if lines * LINE_IN <= BELOW_AT_MOST * axes_h:
        fig.set_figheight(fig.get_figheight() + LINE_IN * lines + (0.15 if title else 0.05))
        fig.legend(handles=handles, loc="outside lower center", ncol=ncol, frameon=False,
                   title=title)
        return
    side = TWO_COLUMNS - width if width < TWO_COLUMNS else width / 2
    fig.set_figwidth(max(width, TWO_COLUMNS))
    wrap = max(20, int(side * 13) - 6)
    for h in handles:
        h.set_label(textwrap.fill(h.get_label().replace("\n", " "), wrap))
    lines = sum(h.get_label().count("\n") + 1 for h in handles) + (1 if title else 0)
    fig.set_figheight(max(fig.get_figheight(), LINE_IN * lines * 1.15 + 0.5))
    fig.legend(handles=handles, loc="outside right upper", ncol=1, frameon=False, title=title)


def legend_lines(handles: list, width: float, ncol: int | None) -> tuple[int, int]:
    """(lines, columns) of a legend under axes `width` inches wide: long labels wrapped into
    fewer columns (the labels are rewrapped in place)."""
    chars = int(width * 13)  # characters of legend text per line at 6 pt
    longest = max(len(h.get_label()) for h in handles)
    ncol = ncol or max(1, min(len(handles), int(chars // (longest + 6)), 5))
    if longest + 6 > chars // ncol:
        ncol = max(1, chars // (longest + 6)) if longest + 6 <= chars else 1
    wrap = max(20, chars // ncol - 6)
    for h in handles:
        h.set_label(textwrap.fill(h.get_label(), wrap))
    return sum(max(1, h.get_label().count("\n") + 1) for h in handles[::ncol]), ncol


def finite(values: Sequence[float]) -> bool:
    return any(v is not None and math.isfinite(v) for v in values)
