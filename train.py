"""Train one model, or a sweep with --multirun. `python train.py --help` lists every option."""

import sys
from pathlib import Path

import hydra

from src.sweeps.cli import check_overrides, quote_paths, register_resolvers
from src.sweeps.job import train_task
from src.sweeps.report import exit_status

CONF = Path(__file__).resolve().parent / "conf"
register_resolvers()
main = hydra.main(version_base="1.3", config_path=str(CONF), config_name="train")(train_task)

if __name__ == "__main__":
    sys.argv[1:] = quote_paths(sys.argv[1:])
    check_overrides(sys.argv[1:], CONF)
    main()
    sys.exit(exit_status())  # a sweep with a failed job exits 1 after all its jobs ran
