"""Hyperparameter search: python tune.py (`python tune.py --help`: the search space, storage,
study and budget; conf/tune.yaml and conf/hydra/sweeper/study.yaml hold the settings)."""

from src.cli import interrupt

interrupt.install()  # before the heavy imports: a Ctrl-C while they load is one line too

import hydra

from src.cli.entry import register_resolvers, run_entry_point
from src.cli.help import tune_help
from src.cli.job import train_task
from src.core.files import CONF

register_resolvers()
main = hydra.main(version_base="1.3", config_path=str(CONF), config_name="tune")(train_task)

if __name__ == "__main__":
    run_entry_point(main, CONF, "tune", tune_help)  # a failed trial: exit 1 after all ran
