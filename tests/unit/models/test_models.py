"""Tests for the model factories in src/models and their Hydra configs in conf/model."""

import re
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from src.core.files import CONF
from src.models.mlp import mlp
from src.models.mnist_cnn import mnist_cnn
from src.models.resnet_cifar import resnet20, resnet32, resnet44, resnet56, resnet110
from src.models.vgg import vgg16_bn
from src.models.vit import vit

MODEL_CONFIGS = sorted((CONF / "model").glob("*.yaml"))


def _forward_backward(model: nn.Module, input_shape: tuple[int, int, int]) -> torch.Tensor:
    """Run a batch of 2 through `model`, backprop the summed logits, return the logits."""
    torch.manual_seed(0)
    logits = model(torch.randn(2, *input_shape))
    logits.sum().backward()
    return logits


def test_all_model_configs_found() -> None:
    names = {p.stem for p in MODEL_CONFIGS}
    expected = {
        "mlp",
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "resnet110",
        "resnet18",
        "resnet50",
        "vgg16_bn",
        "vit",
        "mnist_cnn",
    }
    assert expected <= names


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=lambda p: p.stem)
def test_config_instantiates_and_trains(path: Path) -> None:
    model = hydra.utils.instantiate(OmegaConf.load(path), input_shape=(3, 32, 32), num_classes=10)
    logits = _forward_backward(model, (3, 32, 32))
    assert logits.shape == (2, 10)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        (resnet20, 269_722),
        (resnet32, 464_154),
        (resnet44, 658_586),
        (resnet56, 853_018),
        (resnet110, 1_727_962),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_cifar_resnet_parameter_counts(factory, expected: int) -> None:
    model = factory((3, 32, 32), 10)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_mnist_cnn_has_6272_to_512_layer() -> None:
    model = mnist_cnn((1, 28, 28), 10)
    shapes = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    assert shapes == [(6272, 512), (512, 10)]
    assert _forward_backward(model, (1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(
    "build",
    [lambda s: mlp(s, 10), lambda s: resnet20(s, 10), lambda s: vit(s, 10, patch_size=4)],
    ids=["mlp", "resnet20", "vit"],
)
def test_small_inputs(build) -> None:
    assert _forward_backward(build((1, 8, 8)), (1, 8, 8)).shape == (2, 10)


def test_vgg16_bn_rejects_small_inputs() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "vgg16_bn needs inputs of at least 32x32; the dataset gives 8x8: pick another model"
        ),
    ):
        vgg16_bn((1, 8, 8), 10)


def test_vit_rejects_indivisible_inputs() -> None:
    with pytest.raises(ValueError, match="patch_size=4"):
        vit((3, 30, 30), 10, patch_size=4)


def test_mlp_unknown_activation_is_named() -> None:
    with pytest.raises(ValueError, match=r"'Swoosh'.*ReLU"):
        mlp((1, 8, 8), 10, activation="Swoosh")


def test_mlp_structure_follows_arguments() -> None:
    model = mlp((1, 8, 8), 10, width=32, depth=3, activation="Tanh")
    linears = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears == [(64, 32), (32, 32), (32, 32), (32, 10)]
    assert sum(isinstance(m, nn.Tanh) for m in model.modules()) == 3
