"""Networks by name (src/models/named.py): timm and torchvision builders with the dataset's
channels and classes, one line for an unknown name or for weights in no local cache, and timm's
cached weights read without a download."""

from __future__ import annotations

import os

import huggingface_hub.constants
import pytest
import timm
import torch
from timm.models import get_pretrained_cfg

from src.core.errors import ConfigError
from src.engine.stack import unstackable
from src.models.named import timm_model, torchvision_model


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Neither torch hub's checkpoints nor the Hugging Face cache hold anything."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    before = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(before)


@pytest.mark.parametrize("build, name", [(timm_model, "resnet10t"),
                                         (torchvision_model, "resnet18")])
def test_a_network_by_name_reads_the_datasets_channels_and_classes(build, name):
    model = build((1, 16, 16), 5, name)
    logits = model(torch.randn(2, 1, 16, 16))
    assert logits.shape == (2, 5)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("build, name, closest", [
    (timm_model, "resnet10", "resnet10t"), (torchvision_model, "resnet19", "resnet18"),
    (timm_model, "resnett18", "resnet18")])
def test_an_unknown_name_is_one_line_with_the_closest_names(build, name, closest):
    with pytest.raises(ConfigError, match=f"model.name={name} is not a .* network "
                                          f"\\(did you mean {closest}") as e:
        build((3, 8, 8), 10, name)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("build", [timm_model, torchvision_model])
def test_pretrained_weights_in_no_cache_are_one_line_and_nothing_is_fetched(build,
                                                                            empty_caches):
    with pytest.raises(ConfigError, match=r"model.pretrained=true: the weights of resnet18 are "
                                          r".*a run never downloads"):
        build((3, 32, 32), 10, "resnet18", pretrained=True)
    assert not any(empty_caches.rglob("*.pth"))


def test_timms_cached_weights_load_without_a_download_with_a_new_head(empty_caches):
    """Weights planted where timm keeps them (torch hub's checkpoints folder, the file name of
    the model's published URL) are read; the 1000-class head gives way to the dataset's."""
    published = timm.create_model("resnet10t", num_classes=1000)
    url = get_pretrained_cfg("resnet10t").url
    empty_caches.joinpath("checkpoints").mkdir(parents=True)
    torch.save(published.state_dict(), empty_caches / "checkpoints" / os.path.basename(url))
    model = timm_model((3, 32, 32), 10, "resnet10t", pretrained=True)
    assert model.get_classifier().out_features == 10
    torch.testing.assert_close(model.conv1[0].weight, published.conv1[0].weight, rtol=0, atol=0)


def test_a_network_with_a_random_op_outside_dropout_cannot_stack_and_says_why():
    """timm's stochastic depth draws with torch.rand inside the forward pass, which a stack
    cannot draw per slot: the trial pass says so (the sweep then runs such jobs alone)."""
    sample = torch.zeros(2, 3, 16, 16)
    assert unstackable(timm_model((3, 16, 16), 10, "resnet10t"), sample) is None
    assert unstackable(torchvision_model((3, 16, 16), 10, "resnet18"), sample) is None
    why = unstackable(timm_model((3, 16, 16), 10, "resnet10t",
                                 kwargs={"drop_path_rate": 0.1}), sample)
    assert why is not None and "random operation" in why
