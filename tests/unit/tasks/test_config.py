"""Every config option composes; presets say what the seeds used; run names are stable."""

from __future__ import annotations

import json

import pytest
import torch
from hydra.utils import get_method
from omegaconf import OmegaConf

from src.cli.entry import run_name
from src.core.errors import ConfigError
from src.lifecycle.identity import config_digest
from src.tasks.classify import check_config, run
from tests.helpers.datafiles import (
    write_cifar10,
    write_cifar100,
    write_image_folder,
    write_mnist_tree,
)
from tests.helpers.runs import CONF, SMALL_FAKE, compose_train

GROUPS = ["dataset", "model", "optimizer", "scheduler", "averaging", "compression", "pruning",
          "task", "lr_grid", "experiment"]
REGIMES_DATASETS = {"teacher_student", "mnist_parity", "cifar_animal"}


@pytest.mark.parametrize(("group", "option"), [
    (g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))])
def test_every_option_composes_and_passes_the_checks(group, option, tmp_path):
    # The regimes study's binary datasets need its task; everything else composes on its own.
    # The checks look for a dataset's files too: small ones in the real formats stand in.
    write_cifar10(tmp_path)
    write_cifar100(tmp_path)
    write_mnist_tree(tmp_path, "MNIST")
    write_mnist_tree(tmp_path, "FashionMNIST")
    write_image_folder(tmp_path / "images", {"train": 2})
    task = ["task=regimes"] if group == "dataset" and option in REGIMES_DATASETS else []
    folder = [f"dataset.root={tmp_path / 'images'}"] if option == "image_folder" else []
    cfg = compose_train([*task, f"{group}={option}", f"data_dir={tmp_path}", *folder])
    get_method(cfg.task.run.rsplit(".", 1)[0] + ".check_config")(cfg)
    OmegaConf.to_container(cfg, resolve=True)  # no dangling interpolation


def test_figure1_preset_is_the_weight_averaging_study():
    cfg = compose_train(["experiment=ema_resnet20_cifar10"])
    assert cfg.model._target_.endswith("resnet20") and cfg.dataset.name == "cifar10"
    assert (cfg.epochs, cfg.batch_size, cfg.optimizer.lr, cfg.optimizer.momentum) == (
        180, 128, 0.1, 0.9)
    assert list(cfg.averaging.decays) == [0.9, 0.99, 0.999, 0.9995, 0.9997]
    assert (cfg.dataset.val_size, cfg.dataset.split_seed) == (5000, 1234)


def test_debug_fast_overrides_a_preset():
    cfg = compose_train(["experiment=ema_resnet20_cifar10", "debug=fast"])
    assert cfg.epochs == 1 and cfg.dataset.train_limit == 256


def test_digest_ignores_where_a_run_happens_but_not_what_it_does():
    base = config_digest(compose_train([]))
    assert config_digest(compose_train(["device=cpu", "data_dir=/elsewhere"])) == base
    assert config_digest(compose_train(["optimizer.lr=0.2"])) != base


def test_run_names_follow_the_overrides():
    assert run_name("") == "default"
    assert run_name("model=resnet20,seed=1") == "model=resnet20,seed=1"
    assert "/" not in run_name("data_dir=/a/b")
    long = run_name("x=" + "9" * 400)
    assert len(long) < 160 and long != run_name("x=" + "9" * 401)


@pytest.mark.parametrize("model", ["resnet20", pytest.param("vit", marks=pytest.mark.slow),
                                   "mnist_cnn", pytest.param("vgg16_bn", marks=pytest.mark.slow)])
def test_each_model_family_trains_one_debug_epoch_in_process(tmp_path, model):
    cfg = compose_train([*SMALL_FAKE, "debug=fast", f"model={model}", "device=cpu",
                         "dataset.train_limit=96", "dataset.eval_limit=64",
                         "trainer.progress=false", "logger=none"])
    objective = run(cfg, tmp_path)
    assert 0.0 <= objective <= 1.0
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["step"] == 96 // 32


@pytest.mark.parametrize("epochs", [1, 3])
def test_final_evaluation_evaluates_each_distinct_state_once(tmp_path, monkeypatch, epochs):
    import src.engine.evaluation as runner
    from src.engine.evaluation import distinct as distinct_states

    calls = []

    def counted(module, states, loader, fast):
        calls.extend(distinct_states(states)[0])  # evaluate_states runs each of these once
        return evaluate_states(module, states, loader, fast)

    evaluate_states = runner.evaluate_states
    monkeypatch.setattr(runner, "evaluate_states", counted)
    cfg = compose_train([*SMALL_FAKE, "model=mlp", f"epochs={epochs}", "device=cpu",
                         "optimizer.lr=0.5", "averaging.decays=[0.5]",
                         "trainer.progress=false", "logger=none"])
    run(cfg, tmp_path)
    metrics = json.loads((tmp_path / "summary.json").read_text())["metrics"]
    distinct = 0
    for prefix in ("", "ema_0.5/"):
        last = metrics[f"{prefix}best/epoch"] == epochs
        distinct += 1 if last else 2
        if last:  # the best state is the final one: its numbers are the final ones
            for key in ("train_loss", "val_acc", "test_acc", "test_loss"):
                assert metrics[f"{prefix}best/{key}"] == metrics[f"{prefix}{key}"]
    assert len(calls) == 3 * distinct  # train, val and test of each distinct state
    if epochs == 1:
        assert distinct == 2  # one epoch: the best is the final state of both models


@pytest.mark.parametrize("preset", ["csgd_sgd", "csgd_sign_sgd", "csgd_compressed_sgd"])
def test_compressed_sgd_presets_train_on_every_training_image_and_use_the_seeds_names(
        tmp_path, preset):
    write_mnist_tree(tmp_path / "data", "MNIST")  # 6 training and 3 test images
    cfg = compose_train([f"experiment={preset}", f"data_dir={tmp_path / 'data'}", "epochs=1",
                         "batch_size=2", "workers=1", "device=cpu", "trainer.progress=false",
                         "logger=none"])
    run(cfg, tmp_path / "run")
    record = json.loads((tmp_path / "run" / "history.jsonl").read_text().splitlines()[0])
    assert record["step"] == 3  # all 6 training images, 2 per step: none carved for validation
    assert record["avg_epoch_acc_hist"] == record["train_acc"]
    assert record["avg_epoch_loss_hist"] == record["train_loss"]
    assert record["batch_acc_hist"] == record["full_train_acc"]
    assert record["batch_loss_hist"] == record["full_train_loss"]
    assert round(record["full_train_acc"] * 6, 9).is_integer()  # over the 6 training images
    assert record["full_train_eval_s"] > 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["metrics"]["val_acc"] == summary["metrics"]["test_acc"]  # test validates


def test_a_history_name_for_a_key_the_run_lacks_is_refused():
    cfg = compose_train([*SMALL_FAKE, "+trainer.history_names.acc=full_train_acc"])
    with pytest.raises(ConfigError, match=r"trainer\.history_names\.acc=full_train_acc .*"
                                          r"use one of .*train_acc"):
        check_config(cfg)
    check_config(compose_train([*SMALL_FAKE, "+trainer.history_names.acc=full_train_acc",
                                "trainer.full_train_eval=true"]))


def test_full_train_eval_and_history_names_leave_the_digest_alone():
    plain = compose_train(SMALL_FAKE)
    more = compose_train([*SMALL_FAKE, "trainer.full_train_eval=true",
                          "+trainer.history_names.acc=train_acc"])
    assert config_digest(plain) == config_digest(more)
