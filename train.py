"""Train one model, or a sweep with --multirun. `python train.py --help` lists every option."""

from src.cli import interrupt

interrupt.install()  # before the heavy imports: a Ctrl-C while they load is one line too

import hydra

from src.cli.entry import register_resolvers, run_entry_point
from src.cli.help import train_help
from src.cli.job import train_task
from src.core.files import CONF

register_resolvers()
main = hydra.main(version_base="1.3", config_path=str(CONF), config_name="train")(train_task)

if __name__ == "__main__":
    run_entry_point(main, CONF, "train", train_help)  # a failed sweep job: exit 1 after all ran
