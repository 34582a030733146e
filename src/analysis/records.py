"""Optimizer-benchmark records (seed 002): a sweep's runs as one CSV per record ID and a table of
the best final score per method, next to the seed's published best scores.

A run belongs to record `<ID>` when it was trained with `experiment=record_<ID>`. A setting is one
optimizer with one set of hyperparameters (`choice.optimizer` and every `optimizer.*` value); its
runs are the seeds. Columns carry the seed's names (learning_rate, train_score, val_score, ...)
and `<metric>_std` the standard deviation over seeds; epochs count from 1 (the seed's from 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from src.analysis.grouping import safe
from src.analysis.runs import Run, history_frame, read_yaml
from src.core.errors import ConfigError
from src.core.files import CONF

PREFIX = "record_"
PRESETS = CONF / "experiment"
# history.jsonl key -> record column (the seed's name)
COLUMNS = {"lr": "learning_rate", "train_loss": "train_loss", "train_acc": "train_score",
           "val_loss": "val_loss", "val_acc": "val_score", "grad_norm": "grad_norm",
           "model_norm": "model_norm", "train_epoch_time": "train_epoch_time",
           "step_size": "step_size"}
REFERENCE = Path(__file__).with_name("records_reference.csv")  # the spec's published table
HIDDEN = ("optimizer._target_", "optimizer._partial_")


def record_id(run: Run) -> str | None:
    """'<ID>' for a run of experiment=record_<ID>, else None."""
    choice = run.config.get("choice.experiment")
    return choice.removeprefix(PREFIX) if choice and choice.startswith(PREFIX) else None


def preset_setup(rec: str) -> dict[str, object]:
    """What defines record `rec`'s setup in its preset: dataset, model and epochs."""
    preset = read_yaml(PRESETS / f"{PREFIX}{rec}.yaml") or {}
    setup: dict[str, object] = {"epochs": preset.get("epochs"), "choice.debug": None}
    for entry in preset.get("defaults", []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                group = key.removeprefix("override /")
                if group in ("dataset", "model"):
                    setup[f"choice.{group}"] = value
    return setup


def setup_differences(run: Run) -> list[str]:
    """How a record run's setup differs from its preset's (dataset, model, epochs, debug)."""
    rec = record_id(run)
    if rec is None:
        return []
    return [f"{key.removeprefix('choice.')}={run.config.get(key)}"
            for key, want in preset_setup(rec).items()
            if (want is not None and run.config.get(key) != want)
            or (want is None and run.config.get(key) is not None)]


def table_id(run: Run) -> str | None:
    """The record table a run belongs to: '<ID>' for the preset's own setup, '<ID>@<how it
    differs>' for another one (a smoke run on fake data), so the two are never averaged
    together and only the first is set next to the published scores."""
    rec = record_id(run)
    if rec is None:
        return None
    differences = setup_differences(run)
    return rec if not differences else f"{rec}@{','.join(differences)}"


def column(metric: str) -> str:
    """The record column of a history key or of a record column name."""
    if metric in COLUMNS.values():
        return metric
    if metric not in COLUMNS:
        raise ConfigError(f"metric={metric} is not in the records: use one of "
                          f"{', '.join(COLUMNS)} (or their record names)")
    return COLUMNS[metric]


def higher_is_better(metric: str) -> bool:
    return column(metric).endswith("score")


def records(runs: list[Run]) -> dict[str, pd.DataFrame]:
    """One frame per record ID: a row per setting and epoch with the mean and std over seeds.

    Columns: id, epoch, the metrics, `<metric>_std`, `seeds` (runs of the setting), `runs` (runs
    with a finite val_score at that epoch), `diverged` (runs of the setting that diverged), then
    `name` (the optimizer) and its hyperparameters. A diverged seed stops before the epoch it
    diverged in: later epochs average the remaining seeds (`runs` says how many), and NaN or a
    missing value is never averaged in.
    """
    runs = [r for r in runs if table_id(r) is not None]
    if not runs:
        raise ConfigError("none of these runs is a record run: train them with "
                          "experiment=record_<ID>, e.g. python train.py -m "
                          "experiment=record_mnist_mlp lr_grid=momo")
    hyper = sorted({k for r in runs for k in r.config
                    if k.startswith("optimizer.") and k not in HIDDEN})
    # One row per run (a run that diverged in its first epoch has no history but still counts).
    settings = pd.DataFrame([{"path": str(r.path), "record": table_id(r), "status": r.status,
                              "name": str(r.config.get("choice.optimizer")),
                              **{k: r.config.get(k) for k in hyper}} for r in runs])
    keys = ["name", *hyper]
    settings["id"] = [":".join([f"name={r.config.get('choice.optimizer')}"] + [
        f"{k.removeprefix('optimizer.')}={r.config[k]}" for k in hyper
        if r.config.get(k) is not None]) for r in runs]
    frame = history_frame(runs)
    present = [k for k in COLUMNS if k in frame]
    metrics = [COLUMNS[k] for k in present]
    frame = pd.DataFrame({"path": frame["path"], "epoch": frame["epoch"].astype(int),
                          **{COLUMNS[k]: pd.to_numeric(frame[k], errors="coerce")
                             for k in present}}).replace([np.inf, -np.inf], np.nan)
    frame = frame.merge(settings[["path", "record", "id"]], on="path")
    out = {}
    for rec, own in settings.groupby("record"):
        part = frame[frame["record"] == rec]
        grouped = part.groupby(["id", "epoch"])
        table = grouped[metrics].mean().join(grouped[metrics].std().add_suffix("_std"))
        table["runs"] = grouped["val_score"].count()
        table = table.reset_index()
        per_setting = own.groupby("id").agg(seeds=("path", "nunique"),
                                            diverged=("status", lambda s: int((s == "diverged")
                                                                              .sum())))
        table = table.join(per_setting, on="id").join(
            own.drop_duplicates("id").set_index("id")[keys], on="id")
        out[str(rec)] = table.sort_values(["name", "id", "epoch"]).reset_index(drop=True)
    return out


def final_epochs(runs: list[Run]) -> dict[str, int]:
    """The configured number of epochs of each record table (its runs' `epochs`)."""
    out: dict[str, int] = {}
    for r in runs:
        rec = table_id(r)
        if rec is not None:
            out[rec] = max(out.get(rec, 0), int(r.config.get("epochs", 0)))
    return out


def best_settings(table: pd.DataFrame, final_epoch: int, metric: str = "val_score",
                  top: int = 1) -> pd.DataFrame:
    """Per optimizer, the `top` settings with the best mean `metric` at `final_epoch`.

    Only settings all of whose seeds reached the final epoch count: a setting with a diverged (or
    unfinished) seed is not stable at that learning rate.
    """
    col = column(metric)
    last = table[(table["epoch"] == final_epoch) & (table["runs"] == table["seeds"])
                 & (table["diverged"] == 0)].dropna(subset=[col])
    last = last.sort_values(col, ascending=not higher_is_better(metric))
    return last.groupby("name", sort=True).head(top).sort_values(
        ["name", col], ascending=[True, not higher_is_better(metric)]).reset_index(drop=True)


def reference() -> pd.DataFrame:
    """The seed's published best final validation accuracy per record and method."""
    return pd.read_csv(REFERENCE)


def best_table(tables: dict[str, pd.DataFrame], finals: dict[str, int]) -> pd.DataFrame:
    """Best final val_score per record and method (mean, std over seeds, its lr), next to the
    published score and lr; methods only run here or only published get NaN on the other side,
    and so does a table of another setup than the preset's ('<ID>@...')."""
    rows = []
    for rec, table in tables.items():
        for _, r in best_settings(table, finals[rec]).iterrows():
            rows.append({"record": rec, "method": r["name"], "lr": r.get("optimizer.lr"),
                         "val_score": r["val_score"], "val_score_std": r["val_score_std"],
                         "seeds": int(r["seeds"])})
    ours = pd.DataFrame(rows, columns=["record", "method", "lr", "val_score", "val_score_std",
                                       "seeds"])
    ref = reference().rename(columns={"val_score": "published_val_score",
                                      "lr": "published_lr"})
    ref = ref[ref["record"].isin(tables)]
    merged = ours.merge(ref, on=["record", "method"], how="outer")
    return merged.sort_values(["record", "method"]).reset_index(drop=True)


def markdown(table: pd.DataFrame) -> str:
    """The best-score table as Markdown: accuracies in %, mean ± std over seeds."""
    lines = ["| record | method | ours (%) | lr | published (%) | published lr |",
             "|---|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        std = 0.0 if pd.isna(r.val_score_std) else r.val_score_std
        ours = "n/a" if pd.isna(r.val_score) else f"{100 * r.val_score:.2f} ± {100 * std:.2f}"
        pub = "n/a" if pd.isna(r.published_val_score) else f"{100 * r.published_val_score:.2f}"
        lr = "" if pd.isna(r.lr) else f"{r.lr:g}"
        pub_lr = "" if pd.isna(r.published_lr) else f"{r.published_lr:g}"
        lines.append(f"| {r.record} | {r.method} | {ours} | {lr} | {pub} | {pub_lr} |")
    return ("Best final-epoch validation accuracy per method (best lr; mean ± std over seeds; "
            "settings with a diverged seed excluded)\n\n" + "\n".join(lines) + "\n")


def write(runs: list[Run], out_dir: Path) -> list[Path]:
    """<out_dir>/<ID>.csv for each record ID and best_val_score.csv/.md; returns the paths."""
    tables, finals = records(runs), final_epochs(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for rec, table in tables.items():
        path = out_dir / f"{safe(rec)}.csv"
        table.to_csv(path, index=False)
        paths.append(path)
    best = best_table(tables, finals)
    best.to_csv(out_dir / "best_val_score.csv", index=False)
    (out_dir / "best_val_score.md").write_text(markdown(best))
    return [*paths, out_dir / "best_val_score.csv", out_dir / "best_val_score.md"]
