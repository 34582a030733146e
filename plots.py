"""Figures from run directories: python plots.py runs='outputs/runs/*' metric=val_acc."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.cli import report_user_errors
from src.errors import ConfigError

FIGURES = ("curves",)


@hydra.main(version_base="1.3", config_path="conf", config_name="plots")
@report_user_errors(lambda: None)
def main(cfg: DictConfig) -> None:
    from src.figures import curves, find_runs

    if cfg.figure not in FIGURES:
        raise ConfigError(f"figure={cfg.figure} is not a figure kind: use one of {FIGURES}")
    if cfg.x not in ("epoch", "step"):
        raise ConfigError(f"x={cfg.x} is not an axis: use epoch or step")
    for path in curves(find_runs(cfg.runs), cfg.metric, cfg.x, Path(cfg.out_dir)):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
