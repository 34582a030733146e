"""Figures from run directories: python plots.py runs='outputs/runs/*' figure=curves."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.errors import ConfigError
from src.sweeps.cli import report_user_errors

FIGURES = ("curves", "ema", "lr_stability", "bin_usage", "phase_diagram", "pruning",
           "records", "best_curves")
# The metric a figure kind shows when plots.py is given metric=null.
DEFAULT_METRIC = {"phase_diagram": "test_err"}


@hydra.main(version_base="1.3", config_path="conf", config_name="plots")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from src import figures
    from src.results import find_runs

    if cfg.figure not in FIGURES:
        raise ConfigError(f"figure={cfg.figure} is not a figure kind: use one of "
                          f"{', '.join(FIGURES)}")
    if cfg.x not in ("epoch", "step"):
        raise ConfigError(f"x={cfg.x} is not an axis: use epoch or step")
    runs, out = find_runs(cfg.runs), Path(cfg.out_dir)
    group_by = None if cfg.group_by is None else list(cfg.group_by)
    metric = cfg.metric or DEFAULT_METRIC.get(cfg.figure, "val_acc")
    written = {
        "curves": lambda: figures.curves(runs, metric, cfg.x, group_by, out),
        "ema": lambda: figures.ema(runs, out),
        "lr_stability": lambda: figures.lr_stability(runs, metric, group_by, out),
        "bin_usage": lambda: figures.bin_usage(runs, out),
        "phase_diagram": lambda: figures.phase_diagram(runs, metric, out),
        "pruning": lambda: figures.pruning(runs, out),
        "records": lambda: figures.records(runs, metric, cfg.top, out),
        "best_curves": lambda: figures.best_curves(runs, metric, cfg.top, out),
    }[cfg.figure]()
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
