"""Figures from run directories: python plots.py runs=outputs/runs figure=curves.

`python plots.py --help` lists the figure kinds and the keys.
"""

from src.cli import interrupt

interrupt.install()  # before the heavy imports: a Ctrl-C while they load is one line too

from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig

from src.cli.entry import run_entry_point
from src.cli.help import plots_help
from src.core.errors import ConfigError, report_user_errors
from src.core.files import CONF


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="plots")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from src.analysis.figures import DEFAULT_METRIC, KINDS, Options, draw, user_kind
    from src.analysis.runs import find_runs

    if cfg.figure not in KINDS:
        user_kind(cfg.figure)  # a function of the user's own package, or one line
    if cfg.x not in ("epoch", "step"):
        raise ConfigError(f"x={cfg.x} is not an axis: use epoch or step")
    patterns = list(cfg.runs) if isinstance(cfg.runs, ListConfig) else [str(cfg.runs)]
    group_by = None if cfg.group_by is None else list(cfg.group_by)
    opts = Options(metric=cfg.metric or DEFAULT_METRIC.get(cfg.figure), x=cfg.x,
                   group_by=group_by, top=cfg.top)
    result = draw(cfg.figure, find_runs(patterns), opts, Path(cfg.out_dir))
    for note in dict.fromkeys(result.notes):  # a kind drawn inside another may repeat one
        print(f"note: {note}")
    for path in result.paths:
        print(f"wrote {path}")


if __name__ == "__main__":
    run_entry_point(main, CONF, "plots", plots_help)
