"""Hydra instantiates sweepers only from the `hydra_plugins` namespace package: these subclasses
make the project's sweepers (src/sweeps/grid.py, src/sweeps/study.py) and its launcher
(src/sweeps/stacked.py) visible to it. Nothing here may import torch: Hydra imports this module
on every start, --help included."""

from src.sweeps.grid import GridSweeper as _GridSweeper
from src.sweeps.slurm import SlurmLauncher as _SlurmLauncher
from src.sweeps.stacked import StackedLauncher as _StackedLauncher
from src.sweeps.study import StudySweeper as _StudySweeper
from src.sweeps.workers import WorkersLauncher as _WorkersLauncher


class GridSweeper(_GridSweeper):
    """train.py -m (conf/hydra/sweeper/grid.yaml)."""


class StudySweeper(_StudySweeper):
    """tune.py (conf/hydra/sweeper/study.yaml)."""


class StackedLauncher(_StackedLauncher):
    """hydra/launcher=stacked (conf/hydra/launcher/stacked.yaml)."""


class WorkersLauncher(_WorkersLauncher):
    """hydra/launcher=workers (conf/hydra/launcher/workers.yaml)."""


class SlurmLauncher(_SlurmLauncher):
    """hydra/launcher=submitit_slurm (conf/hydra/launcher/submitit_slurm.yaml)."""
