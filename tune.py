"""Hyperparameter search: python tune.py (see conf/tune.yaml for the search space and storage)."""

import sys
import warnings
from pathlib import Path

import hydra

from src.cli import check_overrides, register_resolvers, train_task

CONF = Path(__file__).resolve().parent / "conf"
register_resolvers()
# The released sweeper still builds Optuna's pre-3.0 distributions; Optuna 4/5 warns on each trial.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"(optuna|hydra_plugins)\b")
main = hydra.main(version_base="1.3", config_path=str(CONF), config_name="tune")(train_task)

if __name__ == "__main__":
    check_overrides(sys.argv[1:], CONF)
    main()
