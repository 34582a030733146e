"""The figure kinds of plots.py, one function each: (runs, options, out_dir) -> Result.

Every kind draws every run it applies to, or says in a note which runs it left out and why; a
kind with nothing to draw is an error (one line), never an empty file. Next to each PNG and PDF
it writes a JSON file with exactly what it drew (series, marks, runs left out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from src.analysis.runs import Run
from src.core.errors import ConfigError


@dataclass(frozen=True)
class Options:
    metric: str | None = None  # None: the kind's default
    x: str = "epoch"  # curves: epoch or step
    group_by: list[str] | None = None  # None: the settings that differ
    top: int = 3  # records, best_curves: learning rates shown per method


@dataclass
class Result:
    paths: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, other: Result) -> None:
        self.paths += other.paths
        self.notes += other.notes


Kind = Callable[[list[Run], Options, Path], Result]

# name -> (function, one-line description), in the order plots.py --help lists them; the
# functions are imported only when drawn (matplotlib and pandas cost seconds).
KINDS: dict[str, tuple[str, str]] = {
    "curves": ("training.curves", "any history metric against epoch or step, one line per "
               "setting, mean and spread over seeds"),
    "lr_stability": ("training.lr_stability", "final metric against learning rate, one curve "
                     "per setting, diverged runs marked"),
    "ema": ("averaging.ema", "weight averaging: validation accuracy per EMA decay and schedule "
            "(seed 003's Figure 1) and the test-accuracy table"),
    "bin_usage": ("compression.bin_usage", "compressed training: share of each level over "
                  "steps, one panel per setting"),
    "phase_diagram": ("regimes.phase_diagram", "regimes of SGD: test error over batch size and "
                      "learning rate with iso-temperature lines; ||w-w0|| against T"),
    "pruning": ("pruning.pruning", "prune and retrain: accuracy and loss against parameters and "
                "FLOPs pruned, arrays and the prunability report"),
    "pruning_methods": ("pruning.pruning_methods", "prune and retrain: every method on one row, "
                        "top-1 error against parameters and FLOPs removed and measured "
                        "speed-up"),
    "records": ("records.records", "optimizer records: a CSV per record, the best-score table "
                "next to the published one, lr_stability and best_curves per record"),
    "best_curves": ("records.best_curves", "optimizer records: curves of the top learning rates "
                    "of each method"),
    "sample_flips": ("samples.sample_flips", "per-sample study: share of samples whose "
                     "correctness flips between epochs, model vs each EMA"),
    "sample_disagreement": ("samples.sample_disagreement", "per-sample study: histogram of how "
                            "often the model and each EMA disagree on a sample"),
    "sample_error_rates": ("samples.sample_error_rates", "per-sample study: distribution of "
                           "per-sample misclassification rates over epochs"),
    "sample_barcode": ("samples.sample_barcode", "per-sample study: the least stable samples "
                       "over epochs, correct or not, with their images (metric: the split)"),
}
DEFAULT_METRIC = {"phase_diagram": "test_err"}


def draw(kind: str, runs: list[Run], opts: Options, out_dir: Path) -> Result:
    """Draw figure kind `kind`: a key of KINDS, or the dotted path of a function of the user's
    own package with the kinds' signature (figure=mylab.figures.loss_gap: docs/extending.md)."""
    import importlib

    if kind in KINDS:
        module, name = KINDS[kind][0].rsplit(".", 1)
        function: Kind = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    else:
        function = user_kind(kind)
    return function(runs, opts, out_dir)


def user_kind(path: str) -> Kind:
    """The function at dotted `path`, or a one-line ConfigError that says what to fix."""
    import importlib

    module, _, name = path.rpartition(".")
    if not module:
        raise ConfigError(f"figure={path} is not a figure kind: use one of {', '.join(KINDS)}, "
                          f"or the dotted path of your own (docs/extending.md)")
    try:
        function = getattr(importlib.import_module(module), name, None)
    except ImportError as e:
        raise ConfigError(f"figure={path}: cannot import {module} ({e}): put its package on "
                          f"PYTHONPATH") from None
    if not callable(function):
        raise ConfigError(f"figure={path}: {module} has no function {name}")
    return function
