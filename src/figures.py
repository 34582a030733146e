"""Figures from run directories, one function per figure kind; each writes PNG and PDF.

Sizes fit one paper column (3.4 in wide); axes carry units; legends name the config values.
"""

from __future__ import annotations

import math
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


def phase_diagram(runs: list[Run], metric: str, out_dir: Path) -> list[Path]:
    """Regimes of SGD: `metric` (default test error) over the (batch size B, learning rate dt)
    plane, log-log, mean over seeds, with iso-temperature lines dt = T B h; and the final
    ||w - w0|| against T, one line per B. One pair of files per group of other varying keys."""
    rows = [{**r.config, "B": r.summary["batch_size"], "dt": r.summary["dt"],
             "T": r.summary["temp"], "h": r.summary["width"], "status": r.status,
             **r.summary.get("metrics", {})} for r in runs if "temp" in r.summary]
    if not rows:
        raise ConfigError("no run here is a finished regimes run: train with task=regimes or "
                          "experiment=regimes_* first")
    frame = pd.DataFrame(rows)
    if metric not in frame:
        raise ConfigError(f"metric={metric} is not a regimes metric: use test_err, test_loss, "
                          f"train_nd, dnorm or another summary.json metric")
    sweep = ("batch_size", "task.dt", "task.temp")
    keys = [k for k in varying_keys(frame, runs) if k not in sweep]
    written: list[Path] = []
    for values, part in frame.groupby(keys) if keys else [((), frame)]:
        values = values if isinstance(values, tuple) else (values,)
        suffix = "_".join(f"{k.split('.')[-1]}{v}" for k, v in zip(keys, values, strict=True))
        stem = f"phase_diagram_{suffix}" if suffix else "phase_diagram"
        written += _phase_plane(part, metric, group_name(keys, values), out_dir, stem)
        written += _norm_vs_temperature(part, group_name(keys, values), out_dir,
                                        stem.replace("phase_diagram", "phase_norm"))
    return written


def _phase_plane(frame: pd.DataFrame, metric: str, title: str, out_dir: Path,
                 stem: str) -> list[Path]:
    ok = frame[frame["status"] == "completed"]
    cells = ok.groupby(["B", "dt"], as_index=False).agg(value=(metric, "mean"), h=("h", "first"))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=COLUMN)
        points = ax.scatter(cells["B"], cells["dt"], c=cells["value"], marker="s", s=30,
                            cmap="viridis", edgecolors="none")
        fig.colorbar(points, ax=ax, label=metric)
        diverged = frame[frame["status"] == "diverged"]
        if len(diverged):
            ax.plot(diverged["B"], diverged["dt"], "x", color="red", ms=3, label="diverged")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        b = np.geomspace(frame["B"].min(), frame["B"].max(), 50)
        h = float(frame["h"].iloc[0])
        top = frame["dt"].max() * 1.5
        ax.set_ylim(frame["dt"].min() / 1.5, top)
        for exponent in range(math.floor(math.log10(frame["T"].min())),
                              math.ceil(math.log10(frame["T"].max())) + 1):
            temp = 10.0**exponent
            ax.plot(b, temp * b * h, "--", color="gray", lw=0.6)
            at = min(b[-1], top / (temp * h)) / 1.4  # label where the line is still visible
            if at >= b[0]:
                ax.text(at, temp * at * h, f"T=1e{exponent}", fontsize=5, color="gray",
                        ha="right", va="bottom", clip_on=True)
        ax.set_xlabel("batch size B")
        ax.set_ylabel("learning rate dt")
        ax.set_title(title)
        if len(diverged):
            ax.legend(frameon=False)
        return save(fig, out_dir, stem)


def _norm_vs_temperature(frame: pd.DataFrame, title: str, out_dir: Path,
                         stem: str) -> list[Path]:
    ok = frame[frame["status"] == "completed"]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=COLUMN)
        for batch, part in ok.groupby("B"):
            cells = part.groupby("T", as_index=False)["dnorm"].mean().sort_values("T")
            ax.plot(cells["T"], cells["dnorm"], marker="o", ms=2, label=f"B={batch}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("temperature T = dt / (B h)")
        ax.set_ylabel("final ||w - w0||")
        ax.set_title(title)
        ax.legend(frameon=False, ncol=2)
        return save(fig, out_dir, stem)
def _per_ratio(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """values [nets, ratios, repetitions] -> mean and std over nets and repetitions per ratio,
    NaN (cells that did not run) left out."""
    flat = np.ma.masked_invalid(values.transpose(1, 0, 2).reshape(values.shape[1], -1))
    return flat.mean(axis=1).filled(np.nan), flat.std(axis=1).filled(np.nan)


def pruning(runs: list[Run], out_dir: Path) -> list[Path]:
    """The prune-and-retrain study's figures and report, from the cells of every pruning run.

    Figure: top-1 and top-5 test accuracy and test loss against the fraction of prunable
    parameters pruned (top row) and of FLOPs pruned (bottom row), one curve per method (mean and
    +-std band over nets and repetitions), the unpruned reference as a grey band (mean +- std over
    nets). Also writes the merged arrays [nets, ratios, repetitions, methods] (npz and JSON) and
    the prunability report (JSON and Markdown; src/pruning/report.py).
    """
    from src.pruning import report

    results = report.collect([r.path for r in runs])
    rows = report.prunability(results)
    panels = (("test_top1_err", "top-1 test accuracy (%)", True),
              ("test_top5_err", "top-5 test accuracy (%)", True),
              ("test_loss", "test loss (nats)", False))
    axes_x = (("keep", "parameters pruned (%)"), ("flops_kept_fraction", "FLOPs pruned (%)"))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(2, 3, figsize=(COLUMN[0] * 2, COLUMN[1] * 1.6), squeeze=False,
                                 layout="constrained")
        for (x_key, x_label), row in zip(axes_x, axes, strict=True):
            for (metric, y_label, is_err), ax in zip(panels, row, strict=True):
                def shown(v: np.ndarray, is_err: bool = is_err) -> np.ndarray:
                    return 100.0 * (1.0 - v) if is_err else v

                ref = shown(results.reference[metric])
                ax.axhspan(ref.mean() - ref.std(), ref.mean() + ref.std(), color="0.6",
                           alpha=0.3, lw=0)
                ax.axhline(ref.mean(), color="0.4", ls="--", lw=0.8, label="unpruned")
                for j, method in enumerate(results.methods):
                    x, _ = _per_ratio(100.0 * (1.0 - results.cells[x_key][..., j]))
                    y, y_std = _per_ratio(shown(results.cells[metric][..., j]))
                    ok = ~np.isnan(x) & ~np.isnan(y)
                    line, = ax.plot(x[ok], y[ok], marker="o", ms=2, label=method)
                    ax.fill_between(x[ok], (y - y_std)[ok], (y + y_std)[ok], alpha=0.2,
                                    color=line.get_color(), lw=0)
                ax.set_xlabel(x_label)
                ax.set_ylabel(y_label)
        axes[0][0].legend(frameon=False)
        paths = save(fig, out_dir, "pruning")
    return [*paths, *report.save(results, rows, out_dir)]
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
