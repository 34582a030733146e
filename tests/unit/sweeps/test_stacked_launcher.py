"""The stacked launcher composes a grid's jobs from one composition (src/sweeps/compose.py:
Composer): every job's config must be the one Hydra composes for it, to the byte."""

from __future__ import annotations

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from src.core.files import CONF
from src.sweeps.compose import Composer
from tests.helpers.runs import compose_train  # noqa: F401  (registers the resolvers)

GRIDS = {
    "seeds and lrs": ["seed=0", "optimizer.lr=0.1"],
    "records preset": ["experiment=record_mnist_mlp", "optimizer.lr=0.01", "seed=2"],
    "regimes": ["task=regimes", "task.dt=0.5", "batch_size=16", "hydra.sweeper.max_batch_size=4"],
    "lists and nulls": ["averaging.decays=[0.9,0.99]", "init_seed=null", "seed=1"],
}
OTHERS = {  # a second job of each grid: other values for the same keys
    "seeds and lrs": ["seed=3", "optimizer.lr=1e-3"],
    "records preset": ["experiment=record_mnist_mlp", "optimizer.lr=3.162", "seed=0"],
    "regimes": ["task=regimes", "task.dt=4", "batch_size=16", "hydra.sweeper.max_batch_size=4"],
    "lists and nulls": ["averaging.decays=[0.5]", "init_seed=4", "seed=2"],
}


@pytest.mark.parametrize("grid", GRIDS)
def test_a_grid_job_composed_from_another_is_what_hydra_composes(grid):
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF)))
    master = loader.load_configuration("train", ["debug=fast"], RunMode.MULTIRUN)
    HydraConfig.instance().set_config(master)
    composer = Composer(loader, master)
    first = composer.compose(GRIDS[grid])  # composed by Hydra
    second = composer.compose(OTHERS[grid])  # from the first's composition
    assert len(composer.kinds) == 1
    for got, overrides in ((first, GRIDS[grid]), (second, OTHERS[grid])):
        want = loader.load_sweep_config(master, overrides)
        assert OmegaConf.to_yaml(got) == OmegaConf.to_yaml(want)
        HydraConfig.instance().set_config(got)
        assert got.hydra.job.override_dirname == want.hydra.job.override_dirname


def test_jobs_that_add_or_drop_keys_are_composed_alone():
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF)))
    master = loader.load_configuration("train", [], RunMode.MULTIRUN)
    composer = Composer(loader, master)
    for overrides in (["+extra=1", "seed=0"], ["~trainer.keep_epochs", "seed=1"],
                      ["optimizer=adam"], ["optimizer=sgd"]):
        want = loader.load_sweep_config(master, overrides)
        assert OmegaConf.to_yaml(composer.compose(overrides)) == OmegaConf.to_yaml(want)
    assert len(composer.kinds) == 2  # one per optimizer choice; + and ~ never shared
