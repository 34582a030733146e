"""Mixed precision, channels_last and torch.compile settings of the training loop."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from src.core.errors import ConfigError
from src.engine.fast_path import FastPath
from src.models.resnet_cifar import resnet20
from src.tasks.classify import run
from tests.helpers.runs import compose_train, summary

CPU = torch.device("cpu")


def settings(**kw) -> OmegaConf:
    base = {"amp": "auto", "channels_last": "auto", "cudnn_benchmark": True}
    return OmegaConf.create({**base, **kw})


def test_auto_is_exact_fp32_on_a_cpu():
    fast = FastPath.from_config(settings(), CPU, resnet20((3, 32, 32), 10), compressed=False)
    assert fast.amp is None and not fast.channels_last and fast.scaler is None


def test_bf16_autocast_runs_matmuls_in_bf16():
    fast = FastPath.from_config(settings(amp="bf16"), CPU, torch.nn.Linear(4, 4), False)
    with fast.autocast():
        out = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16


def test_channels_last_converts_model_and_inputs():
    fast = FastPath.from_config(settings(channels_last=True), CPU, resnet20((3, 32, 32), 10),
                                False)
    model = fast.prepare(resnet20((3, 32, 32), 10))
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.inputs(torch.randn(2, 3, 8, 8)).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(("kw", "says"), [({"amp": "fp8"}, "trainer.amp=fp8"),
                                          ({"amp": "fp16"}, "trainer.amp=fp16")])
def test_bad_precision_settings_are_one_line_errors(kw, says):
    with pytest.raises(ConfigError, match=says):
        FastPath.from_config(settings(**kw), CPU, torch.nn.Linear(2, 2), compressed=False)


@pytest.mark.parametrize("override", ["trainer.amp=bf16", "trainer.channels_last=true"])
def test_runs_train_with_each_setting(tmp_path, override):
    cfg = compose_train(["debug=fast", "model=resnet20", "device=cpu", override,
                         "trainer.progress=false", "logger=none"])
    run(cfg, tmp_path)
    s = summary(tmp_path)
    assert s["status"] == "completed" and 0.0 <= s["metrics"]["test_acc"] <= 1.0


def test_compiled_model_trains_like_the_eager_one(tmp_path):
    # reduce-overhead records CUDA graphs on a GPU; on a CPU it compiles like default, but the
    # trainer still marks every step's start for the graphs (tests/unit/engine/test_cuda.py runs
    # it there).
    args = ["debug=fast", "device=cpu", "trainer.progress=false", "logger=none"]
    run(compose_train(args), tmp_path / "eager")
    eager = summary(tmp_path / "eager")
    for setting in ("true", "reduce-overhead"):
        run(compose_train([*args, f"trainer.compile={setting}"]), tmp_path / setting)
        compiled = summary(tmp_path / setting)
        assert compiled["status"] == "completed"
        assert abs(compiled["metrics"]["val_acc"] - eager["metrics"]["val_acc"]) <= 1 / 128
