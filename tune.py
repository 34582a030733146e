"""Hyperparameter search: python tune.py (see conf/tune.yaml for the search space and storage)."""

import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.cli import check_overrides, register_resolvers, report_user_errors

CONF = Path(__file__).resolve().parent / "conf"
register_resolvers()
# The released sweeper still builds Optuna's pre-3.0 distributions; Optuna 4/5 warns on each trial.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"(optuna|hydra_plugins)\b")


def _run_dir() -> Path | None:
    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


@hydra.main(version_base="1.3", config_path="conf", config_name="tune")
@report_user_errors(_run_dir)
def main(cfg: DictConfig) -> float:
    from src.runner import run

    return run(cfg, _run_dir())


if __name__ == "__main__":
    check_overrides(sys.argv[1:], CONF)
    main()
