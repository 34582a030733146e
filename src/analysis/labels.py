"""The one label table: what every metric and setting is called on a figure or in a table, its
unit, its range and which way is better.

`metric_label("ema_0.99/val_acc")` -> "EMA 0.99, validation accuracy (%)";
`setting_label("optimizer.lr", 0.1)` -> "optimizer.lr=0.1". The records' column names
(val_score, ...) are the same quantities as the history keys (val_acc, ...) and read the same.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Quantity:
    name: str  # words for an axis
    unit: str = ""  # shown in parentheses
    scale: float = 1.0  # stored value x scale = shown value
    low: float | None = None  # the shown range, for clipping spread bands
    high: float | None = None
    higher_is_better: bool = False


PERCENT = {"unit": "%", "scale": 100.0, "low": 0.0, "high": 100.0}
QUANTITIES = {
    "acc": Quantity("accuracy", **PERCENT, higher_is_better=True),
    "score": Quantity("accuracy", **PERCENT, higher_is_better=True),
    "err": Quantity("error", **PERCENT),
    "top1_err": Quantity("top-1 error", **PERCENT),
    "top5_err": Quantity("top-5 error", **PERCENT),
    "loss": Quantity("loss", "nats", low=0.0),
    "aloss": Quantity("alpha x loss", low=0.0),
    "margin": Quantity("smallest margin alpha y f"),
    "nd": Quantity("points not yet fitted", low=0.0),
    "pred_mean": Quantity("mean of alpha f"),
    "pred_var": Quantity("variance of alpha f", low=0.0),
}
WHOLE = {  # keys that are a quantity of their own
    "lr": Quantity("learning rate", low=0.0),
    "learning_rate": Quantity("learning rate", low=0.0),
    "grad_norm": Quantity("gradient norm", low=0.0),
    "model_norm": Quantity("parameter norm", low=0.0),
    "dnorm": Quantity("||w - w0||", low=0.0),
    "norm": Quantity("||w||", low=0.0),
    "step_size": Quantity("step size", low=0.0),
    "train_epoch_time": Quantity("training time per epoch", "s", low=0.0),
    "epoch_s": Quantity("epoch time", "s", low=0.0),
    "wall_s": Quantity("wall time", "s", low=0.0),
    "samples_per_s": Quantity("throughput", "samples/s", low=0.0),
    "bits_per_element": Quantity("bits per element", low=0.0),
    "full_train_acc": Quantity("accuracy on the whole training set", **PERCENT,
                               higher_is_better=True),
    "full_train_loss": Quantity("loss on the whole training set", "nats", low=0.0),
    "full_train_eval_s": Quantity("training-set evaluation time", "s", low=0.0),
    # the compressed-SGD seed's names (its presets add them to history)
    "avg_epoch_acc_hist": Quantity("training accuracy, mean over the epoch's batches", **PERCENT,
                                   higher_is_better=True),
    "avg_epoch_loss_hist": Quantity("training loss, mean over the epoch's batches", "nats",
                                    low=0.0),
    "batch_acc_hist": Quantity("accuracy on the whole training set", **PERCENT,
                               higher_is_better=True),
    "batch_loss_hist": Quantity("loss on the whole training set", "nats", low=0.0),
    "align": Quantity("w_par^2 / (||w_perp||^2 / (d - 1))", low=0.0),
    "dw_par2": Quantity("(w_par - w0_par)^2", low=0.0),
    "dw_perp2": Quantity("||w_perp - w0_perp||^2 / (d - 1)", low=0.0),
    "x1_unfit": Quantity("mean |x_1| of the points not yet fitted", low=0.0),
    "prune_potential@0.5": Quantity("prune potential at +0.5% error", **PERCENT,
                                    higher_is_better=True),
}
SPLITS = {"train": "training", "val": "validation", "test": "test"}

# Settings are named as users type them (scheduler=cosine, optimizer.lr=0.1, batch_size=64);
# these keys hold what another key's choice means.
SETTINGS = {"dataset.name": "dataset", "model._target_": "model"}


def split_metric(metric: str) -> tuple[str, str, str, str]:
    """'ema_0.99/best/val_acc' -> ('ema_0.99', 'best', 'val', 'acc'); parts may be ''."""
    *prefix, leaf = metric.split("/")
    model = prefix[0] if prefix and prefix[0] != "best" else ""
    best = "best" if "best" in prefix else ""
    split, _, kind = leaf.partition("_")
    if split not in SPLITS or not kind:
        return model, best, "", leaf
    return model, best, split, kind


def quantity(metric: str) -> Quantity:
    """What `metric` measures: its words, unit, scale, range and direction."""
    _, _, split, kind = split_metric(metric)
    if not split:
        return WHOLE.get(kind, Quantity(kind.replace("_", " ")))
    return QUANTITIES.get(kind, Quantity(kind.replace("_", " ")))


def model_words(model: str) -> str:
    if model.startswith("ema_"):
        return f"EMA {model.removeprefix('ema_')}"
    return model


def metric_label(metric: str, unit: bool = True, capital: bool = True) -> str:
    """Human words for a metric key, with its unit: an axis label or a table header."""
    model, best, split, _ = split_metric(metric)
    q = quantity(metric)
    words = f"{SPLITS[split]} {q.name}" if split else q.name
    if best:
        words = f"{words} at the best epoch"
    if model:
        words = f"{model_words(model)}, {words}"
    elif capital:
        words = words[0].upper() + words[1:]
    return f"{words} ({q.unit})" if unit and q.unit else words


def shown(metric: str, value: float) -> float:
    """A stored value as it is shown (accuracies in %)."""
    return value * quantity(metric).scale


def higher_is_better(metric: str) -> bool:
    return quantity(metric).higher_is_better


def clip(metric: str, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A spread band's ends (shown values) clipped to what the metric can be (accuracy in
    [0, 100] %, a loss >= 0)."""
    q = quantity(metric)
    bounds = (-np.inf if q.low is None else q.low, np.inf if q.high is None else q.high)
    return np.clip(low, *bounds), np.clip(high, *bounds)


CHANCE_ERROR = 50.0  # % test error of a guess on the regimes study's balanced binary tasks


def colour_range(metric: str, shown: np.ndarray) -> tuple[float, float, str]:
    """(low, high, words for the colour bar's label) of a colour scale for `shown` values: an
    error from 0 to chance (or beyond, if a value is), an accuracy from chance to 100 %, so
    that a few points never look like the whole range; other quantities span their values,
    and the bar's label says so."""
    q = quantity(metric)
    top = float(np.nanmax(shown)) if len(shown) else 0.0
    bottom = float(np.nanmin(shown)) if len(shown) else 0.0
    if q.unit == "%" and not q.higher_is_better:
        return 0.0, max(CHANCE_ERROR, top), ""
    if q.unit == "%":
        return min(100.0 - CHANCE_ERROR, bottom), 100.0, ""
    return bottom, top, f"; colours span {bottom:.3g} to {top:.3g}"


def setting_name(key: str) -> str:
    """A setting's name as typed on the command line: choice.scheduler -> scheduler."""
    return SETTINGS.get(key, key.removeprefix("choice."))


def value_text(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "none"
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return "[" + ",".join(value_text(v) for v in value) + "]"
    if value is None:
        return "none"
    text = str(value)
    return re.sub(r"^(torch\.optim\.|src\.models\.[a-z_]+\.)", "", text)


def setting_label(key: str, value: object) -> str:
    """'optimizer.lr', 0.1 -> 'optimizer.lr=0.1'; 'choice.optimizer', 'momentum' ->
    'optimizer=momentum': what a user types to get it."""
    return f"{setting_name(key)}={value_text(value)}"
