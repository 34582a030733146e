"""The weight-averaging study (seed 003): Figure 1 and Table 1."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from src.analysis import labels
from src.analysis.figures import Options, Result
from src.analysis.figures.training import band, no_history_reason
from src.analysis.grouping import colours, grouping
from src.analysis.runs import Run, aggregate, history_frame
from src.analysis.style import Drawing, figure, integer_axis, legend_below
from src.core.errors import ConfigError

SCHEDULE = "choice.scheduler"
MAX_ROWS = 9


def decays_of(runs: list[Run]) -> list[str]:
    names = {k.split("/")[0] for r in runs for rec in r.history for k in rec
             if k.startswith("ema_") and "/" in k}
    return sorted(names, key=lambda n: float(n.removeprefix("ema_")))


def ema(runs: list[Run], opts: Options, out_dir: Path) -> Result:
    """Figure: `metric` (validation accuracy) against epoch, one panel per schedule (columns)
    and per setting of the other keys that differ (rows; with one schedule the settings flow into
    a grid), one curve per EMA decay and one for the raw model, mean and +-std band over seeds.
    Table: final test accuracy of every model, mean and std over seeds (CSV with numbers,
    Markdown formatted)."""
    metric = opts.metric or "val_acc"
    d = Drawing("ema", metric)
    have = []
    for run in runs:
        if decays_of([run]):
            have.append(run)
        elif not run.history:
            d.leave_out(run, no_history_reason(run, "ema_<decay>/val_acc"))
        else:
            d.leave_out(run, "no EMA tracked (averaging=none, or not a classification run)")
    if not have:
        raise ConfigError("these runs track no EMA: train them with averaging=ema")
    decays = decays_of(have)
    models = [("no EMA", "")] + [(labels.model_words(n), f"{n}/") for n in decays]
    rows = grouping(have, opts.group_by, axes=[SCHEDULE, "averaging.decays"])
    row_items = rows.items()
    if len(row_items) > MAX_ROWS:
        raise ConfigError(f"these runs are {len(row_items)} settings besides the schedule "
                          f"({', '.join(rows.keys)}): the figure shows at most {MAX_ROWS}; "
                          f"narrow runs= to one experiment")
    schedules = sorted({str(r.config.get(SCHEDULE)) for r in have})
    palette = colours([name for name, _ in models])
    cells = [(row, schedule, [r for r in members if str(r.config.get(SCHEDULE)) == schedule])
             for row, members in row_items for schedule in schedules]
    if len(schedules) > 1:  # a column per schedule, a row per setting
        nrows, ncols = len(row_items), len(schedules)
    else:  # one schedule: the settings flow into a grid at most three panels wide
        ncols = min(3, len(cells))
        nrows = math.ceil(len(cells) / ncols)
    fig, axes = figure(nrows, ncols, sharey=True, panel_height=1.8)
    for ax in axes.flat[len(cells):]:
        ax.set_visible(False)
    if len(schedules) == 1:
        fig.suptitle(labels.setting_label(SCHEDULE, schedules[0]), fontsize=7)
    table, points, lines = [], set(), set()
    for k, (ax, (row_name, schedule, part)) in enumerate(zip(axes.flat, cells, strict=False)):
        typed = labels.setting_label(SCHEDULE, schedule)
        title = (f"{row_name}\n{typed}" if rows.keys and len(schedules) > 1 else
                 row_name if rows.keys else typed)
        if not part:
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"no run of\n{row_name}\nwith scheduler={schedule}",
                    ha="center", va="center", fontsize=6, color="0.5", transform=ax.transAxes)
            continue
        frame = history_frame(part)
        for name, prefix in models:
            key = f"{prefix}{metric}"
            if key not in frame:
                continue
            stats = aggregate(frame, ["epoch"], [key])
            stats = stats.assign(_x=stats["epoch"].astype(float)).sort_values("_x")
            stats = stats[stats[f"{key}_count"] > 0]
            mean = labels.shown(metric, stats[f"{key}_mean"].to_numpy())
            std = labels.shown(metric, stats[f"{key}_std"].fillna(0.0).to_numpy())
            drawn = band(ax, metric, stats["_x"].to_numpy(), mean, std, palette[name], name)
            (points if drawn["marker"] else lines).add(name)
            d.add_series(f"{row_name} | {schedule} | {name}", part, **drawn,
                         n=stats[f"{key}_count"])
        for name, prefix in models:
            values = [r.summary.get("metrics", {}).get(f"{prefix}test_acc") for r in part]
            values = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
            table.append({**({"setting": row_name} if rows.keys else {}),
                          "scheduler": schedule, "model": name,
                          "test_acc_mean": np.mean(values) if values else np.nan,
                          "test_acc_std": np.std(values, ddof=1) if len(values) > 1 else
                          (0.0 if values else np.nan),
                          "seeds": len(values), "runs": len(part)})
        integer_axis(ax)
        ax.set_title(textwrap.fill(title, 48 if ncols < 3 else 36), fontsize=6)
        if k // ncols == nrows - 1 or k + ncols >= len(cells):
            ax.set_xlabel("Epoch")
        if k % ncols == 0:
            ax.set_ylabel(labels.metric_label(metric))
    # as drawn: a line where a model has several epochs, a marker where it has one
    handles = [Line2D([], [], color=palette[name], label=name, ms=3,
                      ls="-" if name in lines else "none",
                      marker="o" if name in points else None) for name, _ in models]
    legend_below(fig, handles, title="model", ncol=min(len(models), 6))
    paths = d.save(fig, out_dir, f"ema_{metric.replace('/', '_')}")
    return Result([*paths, *write_table(pd.DataFrame(table), out_dir)], d.summary_notes())


def write_table(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """ema_test_acc.csv (numbers: mean and std as fractions, seeds counted) and .md (%)."""
    csv, md = out_dir / "ema_test_acc.csv", out_dir / "ema_test_acc.md"
    table.to_csv(csv, index=False)
    index = [c for c in ("setting", "scheduler") if c in table]
    models = list(dict.fromkeys(table["model"]))
    lines = ["Test accuracy (%), mean ± std over seeds (n seeds)", "",
             "| " + " | ".join([*index, *models]) + " |",
             "|" + "---|" * (len(index) + len(models))]
    for keys, part in table.groupby(index, sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        cells = []
        for model in models:
            row = part[part["model"] == model].iloc[0]
            if row["seeds"] == 0:
                cells.append("n/a")
            elif row["seeds"] == 1:
                cells.append(f"{100 * row['test_acc_mean']:.2f} (1)")
            else:
                cells.append(f"{100 * row['test_acc_mean']:.2f} ± "
                             f"{100 * row['test_acc_std']:.2f} ({int(row['seeds'])})")
        lines.append("| " + " | ".join([*map(str, keys), *cells]) + " |")
    md.write_text("\n".join(lines) + "\n")
    return [csv, md]
