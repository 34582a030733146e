"""The trainer's open side: typed settings from the config, a new feature joining the loop
without an edit to it, and history keys that come from the code that writes the records."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from src.core.errors import ConfigError
from src.core.files import CONF, read_history
from src.engine.features import Feature
from src.engine.trainer import Parts, Trainer, TrainerSettings, TrainState, history_keys
from src.tasks.classify import check_config, run
from src.tasks.classify import history_keys as run_history_keys
from tests.helpers.pruning import fake_cifar_data
from tests.helpers.runs import QUIET, compose_train


def test_settings_come_from_the_trainer_group_and_the_runs_top_level_keys():
    trainer = OmegaConf.load(CONF / "trainer" / "default.yaml")
    settings = TrainerSettings.from_config(trainer, epochs=3, batch_size=16, seed=7, workers=2)
    assert (settings.epochs, settings.batch_size, settings.seed, settings.workers) == (3, 16, 7, 2)
    for f in fields(TrainerSettings):
        if f.name in trainer and f.name != "log_every":
            assert getattr(settings, f.name) == trainer[f.name], f.name
    assert settings.log_every >= 1


class CountSteps(Feature):
    """A feature from outside the engine: counts steps on the device, records them per epoch."""

    epoch_keys = ("steps_seen",)

    def __init__(self) -> None:
        self.count = torch.zeros((), dtype=torch.int64)
        self.epochs: list[int] = []

    def start_epoch(self, epoch, seed_of):
        self.epochs.append(epoch)

    def after_step(self, index):
        self.count += 1  # no host sync in the hot path

    def epoch_record(self, view):
        return {"steps_seen": int(self.count)}


class Records:
    def __init__(self) -> None:
        self.epochs: list[dict] = []

    def append(self, record: dict) -> None:
        self.epochs.append(record)

    def append_step(self, record: dict) -> None: ...


def test_a_new_feature_joins_the_loop_and_its_keys_reach_every_record():
    data = fake_cifar_data()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    trainer_cfg = OmegaConf.load(CONF / "trainer" / "default.yaml")
    trainer_cfg.progress = False
    settings = TrainerSettings.from_config(trainer_cfg, epochs=2, batch_size=32, seed=0)
    feature, log = CountSteps(), Records()
    Trainer(Parts(model, opt, sched), data, settings, log, lambda s: None,
            [feature]).fit(TrainState())
    steps = len(data.train)
    assert feature.epochs == [0, 1]  # 0-based, as epoch_seed counts them
    assert [r["steps_seen"] for r in log.epochs] == [steps, 2 * steps]
    keys = history_keys(["model"], [CountSteps])
    assert all(keys <= set(r) for r in log.epochs), keys - set(log.epochs[0])


@pytest.mark.parametrize("args", [
    [],
    ["optimizer=momo"],
    ["optimizer=compressed_sgd", "num_bits=2", "workers=2"],
    ["trainer.full_train_eval=true", "averaging.decays=[0.9]"],
    ["trainer.track_samples=true"],
], ids=["default", "momo", "compressed", "full-train-eval", "track-samples"])
def test_the_history_keys_are_the_keys_the_records_hold(args, tmp_path):
    cfg = compose_train(["debug=fast", "device=cpu", "epochs=1", *QUIET, *args])
    run(cfg, tmp_path)
    (record,) = read_history(tmp_path)
    scalars = {k for k, v in record.items() if isinstance(v, int | float)}
    assert run_history_keys(cfg) == scalars


def test_every_history_key_can_be_given_another_name():
    cfg = compose_train(["debug=fast", "optimizer=momo",
                         "+trainer.history_names.epoch_time=train_epoch_time",
                         "+trainer.history_names.eta=step_size"])
    check_config(cfg)
    with open_dict(cfg):
        cfg.trainer.history_names.nope = "no_such_key"
    with pytest.raises(ConfigError, match="no_such_key is not a history key"):
        check_config(cfg)
