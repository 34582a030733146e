"""Prune and retrain (seed 004): the accuracy-compression curves and the prunability report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from src.analysis.figures import Options, Result
from src.analysis.grouping import colours
from src.analysis.runs import Run
from src.analysis.style import Drawing, figure, legend_below
from src.core.errors import ConfigError

PANELS = (("test_top1_err", "Top-1 test accuracy (%)", True),
          ("test_top5_err", "Top-5 test accuracy (%)", True),
          ("test_loss", "Test loss (nats)", False))
X_AXES = (("keep", "Parameters pruned (%)"), ("flops_kept_fraction", "FLOPs pruned (%)"))


def per_ratio(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """values [nets, ratios, repetitions] -> mean and std over nets and repetitions per ratio,
    NaN (cells that did not run) left out."""
    flat = np.ma.masked_invalid(values.transpose(1, 0, 2).reshape(values.shape[1], -1))
    return flat.mean(axis=1).filled(np.nan), flat.std(axis=1).filled(np.nan)


def pruning_runs(runs: list[Run], d: Drawing) -> list[Run]:
    """The pruning runs among `runs`; the others are left out with their reason."""
    have = []
    for run in runs:
        if (run.path / "reference.json").is_file():
            have.append(run)
        elif run.summary.get("kind") != "pruning":
            d.leave_out(run, "not a pruning run (pruning=<method>)")
        else:
            d.leave_out(run, "no reference.json yet (its reference is still training)")
    if not have:
        raise ConfigError("no pruning run here: train with pruning=<method>, e.g. "
                          "experiment=prune_resnet20_cifar10")
    return have


def reference(ax, values: np.ndarray) -> None:
    """The unpruned reference: its mean as a dashed line, and a grey band of +-std over nets
    where there is more than one."""
    if values.std() > 0:
        ax.axhspan(values.mean() - values.std(), values.mean() + values.std(), color="0.6",
                   alpha=0.3, lw=0)
    ax.axhline(values.mean(), color="0.4", ls="--", lw=0.8)


def reference_handles(values: np.ndarray) -> list:
    """The legend's entries for what `reference` draws."""
    mean = Line2D([], [], color="0.4", ls="--", lw=0.8, label="unpruned reference (mean)")
    if values.std() == 0:
        return [mean]
    return [mean, Patch(color="0.6", alpha=0.3, label="unpruned reference (± std)")]


def pruning(runs: list[Run], opts: Options, out_dir: Path) -> Result:
    """Top-1 and top-5 test accuracy and test loss against the fraction of prunable parameters
    pruned (top row) and of FLOPs pruned (bottom row), one curve per method (mean and +-std band
    over nets and repetitions), the unpruned reference as a grey band (mean +- std over nets).
    Also the merged arrays [nets, ratios, repetitions, methods] (npz and JSON) and the
    prunability report (JSON and Markdown; src/pruning/report.py)."""
    from src.pruning import report

    d = Drawing("pruning", "test_top1_err")
    have = pruning_runs(runs, d)
    results = report.collect([r.path for r in have])
    rows = report.prunability(results)
    palette = colours(results.methods)
    fig, axes = figure(2, 3)
    for (x_key, x_label), row in zip(X_AXES, axes, strict=True):
        for (metric, y_label, is_err), ax in zip(PANELS, row, strict=True):
            def shown(v: np.ndarray, is_err: bool = is_err) -> np.ndarray:
                return 100.0 * (1.0 - v) if is_err else v

            ref = shown(results.reference[metric])
            reference(ax, ref)
            for j, method in enumerate(results.methods):
                x, _ = per_ratio(100.0 * (1.0 - results.cells[x_key][..., j]))
                y, y_std = per_ratio(shown(results.cells[metric][..., j]))
                ok = ~np.isnan(x) & ~np.isnan(y)
                low, high = y - y_std, y + y_std
                if is_err:
                    low, high = np.clip(low, 0, 100), np.clip(high, 0, 100)
                ax.plot(x[ok], y[ok], marker="o", ms=2, color=palette[method])
                ax.fill_between(x[ok], low[ok], high[ok], alpha=0.2, color=palette[method],
                                lw=0)
                if x_key == "keep" and metric == "test_top1_err":
                    d.add_series(method, have, pruned_pct=x[ok], top1_acc_pct=y[ok],
                                 std=y_std[ok])
            ax.set_xlabel(x_label)
            ax.set_ylabel(y_label)
    handles = [Line2D([], [], color=palette[m], marker="o", ms=2, label=m)
               for m in results.methods]
    handles += reference_handles(ref)
    legend_below(fig, handles, ncol=min(len(handles), 5))
    paths = d.save(fig, out_dir, "pruning")
    return Result([*paths, *report.save(results, rows, out_dir)], d.summary_notes())


def pruning_methods(runs: list[Run], opts: Options, out_dir: Path) -> Result:
    """All methods on one row: top-1 test error against the fraction of prunable parameters
    removed, of FLOPs removed, and against the measured inference speed-up of the exported
    network (structured methods; unstructured ones are named in that panel, not drawn). Mean
    and +-std band over nets and repetitions; the unpruned reference as a grey band."""
    from src.pruning import report

    d = Drawing("pruning_methods", "test_top1_err")
    have = pruning_runs(runs, d)
    results = report.collect([r.path for r in have])
    palette = colours(results.methods)
    fig, axes = figure(1, 3)
    ref = 100.0 * results.reference["test_top1_err"]
    unmeasured = []
    panels = (("keep", "Parameters removed (%)"), ("flops_kept_fraction", "FLOPs removed (%)"),
              ("speedup", "Measured inference speed-up (x)"))
    for (x_key, x_label), ax in zip(panels, axes[0], strict=True):
        reference(ax, ref)
        for j, method in enumerate(results.methods):
            raw = results.cells[x_key][..., j]
            if x_key == "speedup" and np.isnan(raw).all():
                unmeasured.append(method)
                continue
            x, _ = per_ratio(raw if x_key == "speedup" else 100.0 * (1.0 - raw))
            y, y_std = per_ratio(100.0 * results.cells["test_top1_err"][..., j])
            ok = ~np.isnan(x) & ~np.isnan(y)
            order = np.argsort(x[ok])
            xs, ys, sd = x[ok][order], y[ok][order], y_std[ok][order]
            ax.plot(xs, ys, marker="o", ms=2, color=palette[method])
            ax.fill_between(xs, np.clip(ys - sd, 0, 100), np.clip(ys + sd, 0, 100), alpha=0.2,
                            color=palette[method], lw=0)
            if x_key == "speedup":
                d.add_series(method, have, speedup=xs, top1_err_pct=ys, std=sd)
        ax.set_xlabel(x_label)
        ax.set_ylabel("Top-1 test error (%)")
    if unmeasured:
        axes[0, 2].set_title("not measured (unstructured, dense kernels keep their zeros): "
                             + ", ".join(unmeasured), fontsize=7, color="0.3", wrap=True)
        axes[0, 2].axvline(1.0, color="0.4", ls=":", lw=0.8)
    handles = [Line2D([], [], color=palette[m], marker="o", ms=2, label=m)
               for m in results.methods]
    handles += reference_handles(ref)
    legend_below(fig, handles, ncol=min(len(handles), 5))
    return Result(d.save(fig, out_dir, "pruning_methods"), d.summary_notes())
