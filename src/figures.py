"""Figures from run directories, one function per figure kind; each writes PNG and PDF.

Sizes fit one paper column (3.4 in wide); axes carry units; legends name the config values.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from src import records as record_tables
from src.errors import ConfigError
from src.results import (
    Run,
    aggregate,
    history_frame,
    runs_frame,
    varying_keys,
)

COLUMN = (3.4, 2.6)  # inches
STYLE = {"font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "legend.fontsize": 6,
         "xtick.labelsize": 6, "ytick.labelsize": 6, "lines.linewidth": 1.2,
         "axes.grid": True, "grid.alpha": 0.3, "savefig.bbox": "tight", "savefig.dpi": 200}


def save(fig: plt.Figure, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    for path in paths:
        fig.savefig(path)
    plt.close(fig)
    return paths


def label(metric: str) -> str:
    """Axis label with its unit: accuracies in %, losses in nats."""
    if metric.endswith("acc"):
        return f"{metric} (%)"
    if metric.endswith("loss"):
        return f"{metric} (nats)"
    return metric


def scale(metric: str) -> float:
    return 100.0 if metric.endswith("acc") else 1.0


def group_name(keys: list[str], values: tuple) -> str:
    return ", ".join(f"{k.removeprefix('choice.')}={v}" for k, v in zip(keys, values,
                                                                          strict=True)) or "all"


def curves(runs: list[Run], metric: str, x: str, group_by: list[str] | None,
           out_dir: Path) -> list[Path]:
    """`metric` against `x` (epoch or step), one line per group, mean and +-std band over seeds."""
    frame = history_frame(runs)
    if metric not in frame:
        raise ConfigError(f"metric={metric} is in no run's history: use a history.jsonl key "
                          f"such as val_acc, train_loss or ema_<decay>/val_acc")
    keys = varying_keys(frame, runs) if group_by is None else list(group_by)
    stats = aggregate(frame, [*keys, x], [metric])
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=COLUMN)
        for values, part in stats.groupby(keys) if keys else [((), stats)]:
            values = values if isinstance(values, tuple) else (values,)
            part = part.assign(_x=part[x].astype(float)).sort_values("_x")
            mean = part[f"{metric}_mean"] * scale(metric)
            std = part[f"{metric}_std"].fillna(0.0) * scale(metric)
            line, = ax.plot(part["_x"], mean, label=group_name(keys, values))
            ax.fill_between(part["_x"], mean - std, mean + std, alpha=0.2,
                            color=line.get_color(), lw=0)
        ax.set_xlabel(x)
        ax.set_ylabel(label(metric))
        ax.legend(frameon=False)
        return save(fig, out_dir, f"curves_{metric.replace('/', '_')}_vs_{x}")


def ema(runs: list[Run], out_dir: Path) -> list[Path]:
    """The weight-averaging study's Figure 1 and Table 1.

    Figure: validation accuracy against epoch, one panel per scheduler, one curve per EMA decay
    and one without EMA (mean over seeds). Table: test accuracy per scheduler x decay (mean +- std
    over seeds) as CSV and Markdown.
    """
    history, summary = history_frame(runs), runs_frame(runs)
    decays = sorted({k.split("/")[0] for k in summary.columns if k.startswith("ema_")
                     and k.endswith("/test_acc") and k.count("/") == 1},
                    key=lambda n: float(n.removeprefix("ema_")))
    if not decays:
        raise ConfigError("these runs track no EMA: train them with averaging=ema")
    models = [("no EMA", "")] + [(d.removeprefix("ema_"), f"{d}/") for d in decays]
    key = "choice.scheduler"
    schedulers = sorted(summary[key].astype(str).unique())
    paths = []
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(schedulers), figsize=(COLUMN[0] * max(1, len(
            schedulers)) / 1.6, COLUMN[1]), sharey=True, squeeze=False)
        for ax, sched in zip(axes[0], schedulers, strict=True):
            part = history[history[key].astype(str) == sched]
            for name, prefix in models:
                stats = aggregate(part, ["epoch"], [f"{prefix}val_acc"])
                ax.plot(stats["epoch"].astype(float), 100 * stats[f"{prefix}val_acc_mean"],
                        label=name)
            ax.set_title(sched)
            ax.set_xlabel("epoch")
        axes[0][0].set_ylabel("val_acc (%)")
        axes[0][-1].legend(frameon=False, title="EMA decay")
        paths += save(fig, out_dir, "ema_val_acc")
    rows = []
    for sched in schedulers:
        part = summary[summary[key].astype(str) == sched]
        row = {"scheduler": sched}
        for name, prefix in models:
            values = 100 * part[f"{prefix}test_acc"].dropna()
            std = values.std() if len(values) > 1 else 0.0
            row[name] = f"{values.mean():.2f} ± {std:.2f}" if len(values) else "n/a"
        rows.append(row)
    table = pd.DataFrame(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "ema_test_acc.csv", index=False)
    header = "| " + " | ".join(table.columns) + " |"
    lines = [header, "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in table.itertuples(index=False)]
    (out_dir / "ema_test_acc.md").write_text(
        "Test accuracy (%), mean ± std over seeds\n\n" + "\n".join(lines) + "\n")
    return [*paths, out_dir / "ema_test_acc.csv", out_dir / "ema_test_acc.md"]


def lr_stability(runs: list[Run], metric: str, group_by: list[str] | None,
                 out_dir: Path) -> list[Path]:
    """Final `metric` against the learning rate (log axis), one curve per group (default: the
    optimizer), mean +- std over seeds; diverged runs are drawn as crosses on the x axis."""
    frame = runs_frame(runs)
    lr = "optimizer.lr"
    keys = ["choice.optimizer"] if group_by is None else list(group_by)
    if metric not in frame:
        frame[metric] = np.nan
    stats = aggregate(frame, [*keys, lr], [metric])
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=COLUMN)
        for values, part in stats.groupby(keys):
            values = values if isinstance(values, tuple) else (values,)
            part = part.assign(_lr=part[lr].astype(float)).sort_values("_lr")
            ok = part[part[f"{metric}_count"] > 0]
            mean = ok[f"{metric}_mean"] * scale(metric)
            std = ok[f"{metric}_std"].fillna(0.0) * scale(metric)
            line, = ax.plot(ok["_lr"], mean, marker="o", ms=3, label=group_name(keys, values))
            ax.fill_between(ok["_lr"], mean - std, mean + std, alpha=0.2,
                            color=line.get_color(), lw=0)
            match = np.ones(len(frame), dtype=bool)
            for k, v in zip(keys, values, strict=True):
                match &= frame[k].astype(str).to_numpy() == v
            diverged = frame[match & (frame["status"] == "diverged").to_numpy()]
            if len(diverged):
                ax.plot(diverged[lr].astype(float), np.zeros(len(diverged)), "x",
                        color=line.get_color(), ms=5, clip_on=False)
        ax.plot([], [], "x", color="gray", label="diverged")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel(f"final {label(metric)}")
        ax.legend(frameon=False)
        return save(fig, out_dir, f"lr_stability_{metric.replace('/', '_')}")


def bin_usage(runs: list[Run], out_dir: Path) -> list[Path]:
    """Level usage over training as stacked bars (fraction of sent levels per log interval), one
    panel per run with gradient compression (the compressed-SGD study's bin usage)."""
    used = [r for r in runs if r.summary.get("compression") and r.steps()]
    if not used:
        raise ConfigError("no run here logged level usage: train with a compression, e.g. "
                          "optimizer=compressed_sgd")
    used = used[:6]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(used), 1, figsize=(COLUMN[0], COLUMN[1] * 0.7 * len(used)),
                                 squeeze=False)
        for ax, run in zip(axes[:, 0], used, strict=True):
            low, high = run.summary["compression"]["levels"]
            steps = [s for s in run.steps() if "level_counts" in s]
            counts = np.array([s["level_counts"] for s in steps], dtype=float)
            fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
            x = np.array([s["step"] for s in steps])
            bottom = np.zeros(len(x))
            width = np.diff(x, prepend=0) * 0.9
            for i, level in enumerate(range(low, high + 1)):
                if counts[:, i].any():
                    ax.bar(x, fractions[:, i], width=width, bottom=bottom, align="edge",
                           label=str(level))
                    bottom += fractions[:, i]
            ax.set_title(run.path.name, loc="left")
            ax.set_ylabel("share of levels")
            ax.set_ylim(0, 1)
            ax.legend(frameon=False, title="level", ncol=4, loc="lower right")
        axes[-1][0].set_xlabel("step")
        return save(fig, out_dir, "bin_usage")


def best_curves(runs: list[Run], metric: str, top: int, out_dir: Path) -> list[Path]:
    """Optimizer records: `metric` against epoch for the `top` best learning rates of each method
    (ranked by the final mean), one panel per method and one figure per record ID, mean +- std
    over seeds. Settings with a diverged seed are not ranked."""
    if top < 1:
        raise ConfigError(f"top={top} must be >= 1: the number of learning rates per method")
    tables, finals = record_tables.records(runs), record_tables.final_epochs(runs)
    col = record_tables.column(metric)
    pct = 100.0 if col.endswith("score") else 1.0  # scores (accuracies) in %
    paths = []
    for rec, table in tables.items():
        best = record_tables.best_settings(table, finals[rec], metric, top)
        if best.empty:
            raise ConfigError(f"no setting of record {rec} has all its seeds at epoch "
                              f"{finals[rec]}: let the sweep finish (or it diverged everywhere)")
        methods = list(dict.fromkeys(best["name"]))
        with plt.rc_context(STYLE):
            fig, axes = plt.subplots(1, len(methods), squeeze=False, sharey=True, figsize=(
                max(COLUMN[0], COLUMN[0] * len(methods) / 2), COLUMN[1]))
            for ax, method in zip(axes[0], methods, strict=True):
                for _, setting in best[best["name"] == method].iterrows():
                    part = table[table["id"] == setting["id"]].sort_values("epoch")
                    mean = part[col] * pct
                    std = part[f"{col}_std"].fillna(0.0) * pct
                    line, = ax.plot(part["epoch"], mean, label=f"lr={setting['optimizer.lr']:g}")
                    ax.fill_between(part["epoch"], mean - std, mean + std, alpha=0.2,
                                    color=line.get_color(), lw=0)
                ax.set_title(method)
                ax.set_xlabel("epoch")
                ax.legend(frameon=False)
            axes[0][0].set_ylabel(f"{col} (%)" if pct != 1.0 else label(col))
            fig.suptitle(rec, fontsize=7)
            paths += save(fig, out_dir, f"best_curves_{rec}_{col}")
    return paths


def records(runs: list[Run], metric: str, top: int, out_dir: Path) -> list[Path]:
    """Optimizer records: one CSV per record ID, the best-score table (CSV and Markdown, next to
    the published scores) and, per record ID, the lr_stability and best_curves figures."""
    paths = record_tables.write(runs, out_dir)
    by_id: dict[str, list[Run]] = {}
    for run in runs:
        rec = record_tables.record_id(run)
        if rec is not None:
            by_id.setdefault(rec, []).append(run)
    for rec, own in sorted(by_id.items()):
        paths += lr_stability(own, metric, None, out_dir / rec)
    return [*paths, *best_curves(runs, metric, top, out_dir)]
