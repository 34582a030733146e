"""The weight-averaging study's per-sample figures (seed 003's plots.py), drawn from the
correctness every run with trainer.track_samples=true recorded each epoch (src/engine/samples.py).

Seeds of a setting are pooled: curves are averaged over them at the epochs all recorded,
histograms count the samples of all of them. One row of panels per setting, one panel per split.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, PercentFormatter

from src.analysis import labels
from src.analysis.figures import Options, Result
from src.analysis.grouping import colours, grouping
from src.analysis.runs import Run
from src.analysis.style import Drawing, figure, legend_below
from src.core.errors import ConfigError, UserError
from src.engine.samples import SampleRecord, read_samples

ROWS_PER_FILE = 4  # settings per file; more go to further files
BARCODE_SAMPLES = 30
SPLIT_ORDER = ("train", "val", "test")


def with_samples(runs: list[Run], d: Drawing, kind: str) -> list[tuple[Run, SampleRecord]]:
    """The runs that recorded per-sample correctness (at least two epochs), the rest left out."""
    have = []
    for run in runs:
        record = read_samples(run.path)
        if record is None:
            d.leave_out(run, "no per-sample record (train with trainer.track_samples=true)")
        elif len(record.epochs) < 2:
            d.leave_out(run, "fewer than two epochs of per-sample record")
        else:
            have.append((run, record))
    if not have:
        raise ConfigError(f"figure={kind}: no run here recorded per-sample correctness for two "
                          f"epochs or more: train with trainer.track_samples=true")
    return have


def settings(have: list[tuple[Run, SampleRecord]], opts: Options
             ) -> list[tuple[str, list[tuple[Run, SampleRecord]]]]:
    by_path = {r.path: (r, rec) for r, rec in have}
    groups = grouping([r for r, _ in have], opts.group_by)
    return [(name, [by_path[r.path] for r in members]) for name, members in groups.items()]


def splits_of(members: list[tuple[Run, SampleRecord]]) -> list[str]:
    common = set.intersection(*(set(rec.splits) for _, rec in members))
    return [s for s in SPLIT_ORDER if s in common]


def models_of(members: list[tuple[Run, SampleRecord]]) -> list[str]:
    first = members[0][1].models
    return [m for m in first if all(m in rec.models for _, rec in members)]


def model_label(model: str) -> str:
    return "model (no averaging)" if model == "model" else labels.model_words(model)


def pages(items: list, per_file: int) -> list[list]:
    return [items[i:i + per_file] for i in range(0, len(items), per_file)]


def title(ax: plt.Axes, setting: str, split: str, n_runs: int, ncols: int) -> None:
    seeds = f", {n_runs} runs pooled" if n_runs > 1 else ""
    text = f"{labels.SPLITS[split]} set{seeds}" if not setting else \
        f"{setting}: {labels.SPLITS[split]} set{seeds}"
    ax.set_title(textwrap.fill(text, 70 if ncols == 1 else 48), fontsize=6, loc="left")


def draw_pages(d: Drawing, have: list[tuple[Run, SampleRecord]], opts: Options,
               out_dir: Path, panel, xlabel: str, ylabel: str, handles) -> Result:
    """Rows of settings x panels of splits, `panel(ax, model_colours, members, split)` drawing
    one panel and returning what it drew (for the JSON)."""
    kind = d.kind
    items = settings(have, opts)
    models = list(dict.fromkeys(m for _, members in items for m in models_of(members)))
    palette = colours(models)
    paths = []
    for index, page in enumerate(pages(items, ROWS_PER_FILE)):
        d.series = []
        ncols = max(len(splits_of(members)) for _, members in page)
        fig, axes = figure(len(page), ncols, panel_height=1.6)
        for row, (name, members) in zip(axes, page, strict=True):
            splits = splits_of(members)
            for ax in row[len(splits):]:
                ax.set_visible(False)
            for ax, split in zip(row, splits, strict=False):
                drawn = panel(ax, palette, members, split)
                title(ax, name if len(items) > 1 or opts.group_by else "", split,
                      len(members), ncols)
                d.add_series(f"{name} | {split}", [r for r, _ in members], split=split,
                             **drawn)
        for ax in axes[-1]:
            ax.set_xlabel(xlabel)
        for ax in axes[:, 0]:
            ax.set_ylabel(ylabel)
        legend_below(fig, handles(palette))
        stem = kind if len(items) <= ROWS_PER_FILE else f"{kind}_{index + 1}"
        paths += d.save(fig, out_dir, stem)
    return Result(paths, d.summary_notes())


def line_handles(palette: dict[str, str]) -> list[Line2D]:
    return [Line2D([], [], color=c, label=model_label(m)) for m, c in palette.items()]


def sample_flips(runs: list[Run], opts: Options, out_dir: Path) -> Result:
    """Per epoch, the share of samples whose correctness changed since the epoch before, for
    the model and each EMA: how stable each model's per-sample predictions are."""
    d = Drawing("sample_flips", "flipped")
    have = with_samples(runs, d, "sample_flips")

    def panel(ax, palette, members, split):
        out = {}
        for model in models_of(members):
            common = sorted(set.intersection(*(set(rec.epochs.tolist()) for _, rec in members)))
            per_run = []
            for _, rec in members:
                c = rec.correct[(model, split)][np.isin(rec.epochs, common)]
                per_run.append((c[1:] != c[:-1]).mean(axis=1) * 100)
            mean, std = np.mean(per_run, axis=0), np.std(per_run, axis=0)
            epochs = np.array(common[1:])
            ax.plot(epochs, mean, color=palette[model], lw=1.0)
            if len(members) > 1:
                ax.fill_between(epochs, np.clip(mean - std, 0, 100), np.clip(mean + std, 0, 100),
                                color=palette[model], alpha=0.2, lw=0)
            out[model] = {"epoch": epochs.tolist(), "mean": mean.tolist(), "std": std.tolist()}
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return {"flipped_percent": out}

    return draw_pages(d, have, opts, out_dir, panel, "Epoch",
                      "Samples flipped since\nthe previous epoch (%)", line_handles)


def rate_bins(members: list[tuple[Run, SampleRecord]]) -> np.ndarray:
    """Bins for a share of E epochs: one bin per possible value k/E (centred on it) when E is at
    most 20, else 20 equal bins."""
    epochs = min(len(rec.epochs) for _, rec in members)
    if epochs <= 20:
        return (np.arange(epochs + 2) - 0.5) / epochs
    return np.linspace(0, 1, 21)


def histogram(ax, values: np.ndarray, colour: str, bins: np.ndarray) -> np.ndarray:
    counts, _ = np.histogram(values, bins=bins)
    share = counts / max(len(values), 1) * 100
    ax.stairs(share, bins, color=colour, lw=1.0)
    return share


def sample_disagreement(runs: list[Run], opts: Options, out_dir: Path) -> Result:
    """Histogram over samples of how often the model and each EMA disagree (one is right, the
    other wrong), as a share of the recorded epochs."""
    d = Drawing("sample_disagreement", "disagreement")
    have = with_samples(runs, d, "sample_disagreement")
    if not any(len(rec.models) > 1 for _, rec in have):
        raise ConfigError("figure=sample_disagreement compares the model with its EMAs: no run "
                          "here averages (set averaging.decays)")
    def panel(ax, palette, members, split):
        out, bins = {}, rate_bins(members)
        for ema in models_of(members)[1:]:
            values = np.concatenate([(rec.correct[("model", split)] != rec.correct[(ema, split)])
                                     .mean(axis=0) for _, rec in members])
            out[ema] = histogram(ax, values, palette[ema], bins).tolist()
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        return {"bins": bins.tolist(), "share_percent": out}

    def handles(palette):
        return [Line2D([], [], color=c, label=f"model vs {model_label(m)}")
                for m, c in palette.items() if m != "model"]

    return draw_pages(d, have, opts, out_dir, panel,
                      "Share of the epochs on which model and EMA disagree", "Samples (%)",
                      handles)


def sample_error_rates(runs: list[Run], opts: Options, out_dir: Path) -> Result:
    """Histogram over samples of each model's misclassification rate over the recorded epochs:
    samples always right (0), always wrong (1) and those in between."""
    d = Drawing("sample_error_rates", "error_rate")
    have = with_samples(runs, d, "sample_error_rates")
    def panel(ax, palette, members, split):
        out, bins = {}, rate_bins(members)
        for model in models_of(members):
            values = np.concatenate([1 - rec.correct[(model, split)].mean(axis=0)
                                     for _, rec in members])
            out[model] = histogram(ax, values, palette[model], bins).tolist()
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        return {"bins": bins.tolist(), "share_percent": out}

    return draw_pages(d, have, opts, out_dir, panel,
                      "Share of the epochs misclassified", "Samples (%)", line_handles)


def images_of(run: Run, split: str, index: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The samples' images (n, H, W, C) in [0, 1] from the run's own dataset, or None and why."""
    from hydra.errors import InstantiationException
    from omegaconf import OmegaConf

    from src.core.trusted_config import check_targets
    from src.data.bundle import build_data

    path = run.path / ".hydra" / "config.yaml"
    try:
        cfg = OmegaConf.load(path)
        check_targets(cfg, path)
        import torch

        data = build_data(cfg.dataset, 1, 1024, torch.device("cpu"))
    except (UserError, OSError, InstantiationException) as e:
        return None, " ".join(str(e).split())[:200]
    view = data.train_eval if split == "train" else getattr(data, split)
    x = view.x[torch.as_tensor(index)].float()
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[2] < 4:
        return None, "its inputs are not images"
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    high = x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - low) / (high - low).clamp_min(1e-12)
    return x.permute(0, 2, 3, 1).numpy(), ""


def sample_barcode(runs: list[Run], opts: Options, out_dir: Path) -> Result:
    """For each run, the least stable samples of a split (most flips of the raw model; split:
    metric=train|val|test, default val) over epochs, correct or not, for the model and each EMA,
    with the samples' images next to them where the data are images."""
    split = opts.metric or "val"
    if split not in SPLIT_ORDER:
        raise ConfigError(f"figure=sample_barcode metric={split}: the metric names the split "
                          f"here: use train, val or test")
    d = Drawing("sample_barcode", split)
    have = []
    for run, rec in with_samples(runs, d, "sample_barcode"):
        if split in rec.splits:
            have.append((run, rec))
        else:
            d.leave_out(run, f"no per-sample record of the {split} split")
    if not have:
        raise ConfigError(f"figure=sample_barcode metric={split}: no run recorded the {split} "
                          f"split: pick one of the recorded splits, or add it to "
                          f"trainer.track_splits")
    cmap = ListedColormap(["#d95f02", "#1b9e77"])  # wrong, right
    paths = []
    for run, rec in have:
        d.series = []
        flips = np.abs(np.diff(rec.correct[("model", split)].astype(int), axis=0)).sum(axis=0)
        order = np.lexsort((np.arange(len(flips)), -flips))[:BARCODE_SAMPLES]
        order = order[flips[order] > 0]  # samples that never changed are not unstable
        if not len(order):
            d.leave_out(run, f"no {split} sample changed correctness between epochs")
            continue
        images, why = images_of(run, split, order)
        panels = len(rec.models) + (images is not None)
        widths = ([0.12] if images is not None else []) + [1.0] * len(rec.models)
        n = len(order)
        fig, axes = plt.subplots(1, panels, figsize=(7.0 if panels > 3 else 3.4,
                                                     0.5 + 0.12 * n + 0.6),
                                 layout="constrained", squeeze=False,
                                 gridspec_kw={"width_ratios": widths})
        axes = axes[0]
        if images is not None:
            column = np.concatenate(list(images), axis=0)
            # square images, one per barcode row: the column is as tall as the barcodes
            axes[0].imshow(column.squeeze(-1) if column.shape[-1] == 1 else column,
                           cmap="gray", aspect="equal", interpolation="nearest")
            axes[0].set_axis_off()
            axes[0].set_title("image", fontsize=6)
        else:
            d.notes.append(f"{run.name}: images left out ({why})")
        for ax, model in zip(axes[panels - len(rec.models):], rec.models, strict=True):
            c = rec.correct[(model, split)][:, order].T
            ax.imshow(c, cmap=cmap, vmin=0, vmax=1, aspect="auto", interpolation="nearest",
                      extent=(rec.epochs[0] - 0.5, rec.epochs[-1] + 0.5, n, 0))
            ax.set_title(model_label(model), fontsize=6)
            ax.set_xlabel("Epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(False)
            d.add_series(model, [run], samples=order, epochs=rec.epochs, correct=c)
        first = axes[panels - len(rec.models)]
        first.set_ylabel(f"The {n} least stable {labels.SPLITS[split]} samples\n(most flips "
                         f"of the model first)")
        first.set_yticks(np.arange(n) + 0.5, [str(i) for i in order], fontsize=4)
        for ax in axes[panels - len(rec.models) + 1:]:
            ax.set_yticks([])
        fig.suptitle(textwrap.fill(run.name.replace(",", ", "), 110), fontsize=6)
        legend_below(fig, [Patch(color=cmap(1), label="correct"),
                           Patch(color=cmap(0), label="misclassified")], ncol=2)
        paths += d.save(fig, out_dir, f"sample_barcode_{split}_{safe_name(run)}")
    if not paths:
        raise ConfigError(f"figure=sample_barcode: in no run did a {split} sample change "
                          f"correctness between epochs: there is no unstable sample to draw")
    if len(paths) > 3:
        d.notes.append(f"{len(paths) // 3} runs drawn, one file each")
    return Result(paths, d.summary_notes())


def safe_name(run: Run) -> str:
    """The run's name as a file-name part, unique: a long one is cut and given a digest."""
    import hashlib

    from src.analysis.grouping import safe

    name = safe(run.name) or "run"
    if len(name) <= 120:
        return name
    return f"{name[:100]}-{hashlib.sha256(str(run.path).encode()).hexdigest()[:10]}"
