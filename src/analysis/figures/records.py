"""Optimizer records (seed 002): the record tables and their figures."""

from __future__ import annotations

import textwrap
from pathlib import Path

from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from src.analysis import labels
from src.analysis import records as tables
from src.analysis.figures import Options, Result
from src.analysis.figures.training import band, lr_stability
from src.analysis.grouping import colours, safe
from src.analysis.runs import Run
from src.analysis.style import Drawing, figure, legend_below
from src.core.errors import ConfigError


def record_runs(runs: list[Run], d: Drawing) -> dict[str, list[Run]]:
    """Runs by record table; the others are left out, and other setups are said."""
    by_id: dict[str, list[Run]] = {}
    for run in runs:
        rec = tables.table_id(run)
        if rec is None:
            d.leave_out(run, "not a record run (experiment=record_<ID>)")
        else:
            by_id.setdefault(rec, []).append(run)
    for rec in by_id:
        if "@" in rec:
            d.notes.append(f"record {rec.split('@')[0]} runs with another setup than its preset "
                           f"({rec.split('@')[1]}) are tabled as {rec}, apart from the preset's "
                           f"and not next to the published scores")
    return by_id


def records(runs: list[Run], opts: Options, out_dir: Path) -> Result:
    """One CSV per record table, the best-score table (CSV and Markdown, next to the published
    scores) and, per table, the lr_stability and best_curves figures."""
    d = Drawing("records")
    by_id = record_runs(runs, d)
    record_runs_only = [r for own in by_id.values() for r in own]
    result = Result(tables.write(record_runs_only, out_dir))
    for rec, own in sorted(by_id.items()):
        result.add(lr_stability(own, opts, out_dir / safe(rec)))
    result.add(best_curves(record_runs_only, opts, out_dir))
    result.notes = [*d.summary_notes(), *result.notes]
    return result


def best_curves(runs: list[Run], opts: Options, out_dir: Path) -> Result:
    """`metric` against epoch for the `top` best learning rates of each method (ranked by the
    final mean), one panel per method and one figure per record table, mean +- std over seeds;
    a learning rate has the same colour in every panel. Settings with a diverged seed are not
    ranked."""
    metric, top = opts.metric or "val_acc", opts.top
    if top < 1:
        raise ConfigError(f"top={top} must be >= 1: the number of learning rates per method")
    d = Drawing("best_curves", metric)
    by_id = record_runs(runs, d)
    if not by_id:
        raise ConfigError("none of these runs is a record run: train them with "
                          "experiment=record_<ID>, e.g. python train.py -m "
                          "experiment=record_mnist_mlp lr_grid=momo")
    own = [r for rs in by_id.values() for r in rs]
    all_tables, finals = tables.records(own), tables.final_epochs(own)
    col = tables.column(metric)
    result = Result()
    for rec, table in all_tables.items():
        d.series = []
        best = tables.best_settings(table, finals[rec], metric, top)
        if best.empty:
            raise ConfigError(f"no setting of record {rec} has all its seeds at epoch "
                              f"{finals[rec]}: let the sweep finish (or it diverged everywhere)")
        methods = list(dict.fromkeys(best["name"]))
        rates = sorted(set(best["optimizer.lr"]))
        palette = colours([f"lr={v:g}" for v in rates])
        fig, axes = figure(1, len(methods), sharey=True)
        for ax, method in zip(axes[0], methods, strict=True):
            for _, setting in best[best["name"] == method].iterrows():
                part = table[table["id"] == setting["id"]].sort_values("epoch")
                mean = labels.shown(col, part[col].to_numpy())
                std = labels.shown(col, part[f"{col}_std"].fillna(0.0).to_numpy())
                name = f"lr={setting['optimizer.lr']:g}"
                drawn = band(ax, col, part["epoch"].to_numpy(), mean, std, palette[name], name)
                d.add_series(f"{method} {name}", [], **drawn, seeds=part["runs"])
            ax.set_title(method)
            ax.set_xlabel("Epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0][0].set_ylabel(labels.metric_label(col))
        handles = [Line2D([], [], color=palette[f"lr={v:g}"], label=f"lr={v:g}") for v in rates]
        fig.suptitle(textwrap.fill(f"record {rec}", 90), fontsize=7)
        legend_below(fig, handles, title=f"the {top} best learning rates of each method")
        result.paths += d.save(fig, out_dir, f"best_curves_{safe(rec)}_{col}")
    result.notes += d.summary_notes()
    return result
