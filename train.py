"""Train one model, or a sweep with --multirun. `python train.py --help` lists every option."""

import sys
from pathlib import Path

import hydra

from src.cli import check_overrides, register_resolvers, train_task

CONF = Path(__file__).resolve().parent / "conf"
register_resolvers()
main = hydra.main(version_base="1.3", config_path=str(CONF), config_name="train")(train_task)

if __name__ == "__main__":
    check_overrides(sys.argv[1:], CONF)
    main()
