"""Networks by name from timm and torchvision (`model=timm model.name=...`,
`model=torchvision model.name=...`).

The number of input channels and of classes come from the dataset. Pretrained weights are read
from the local caches only (timm's Hugging Face cache, torch hub's checkpoints folder): a run
never downloads, and weights that are not there are one line, said before the run writes.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.core.errors import ConfigError


def declares_check(check: Callable[..., None]) -> Callable[[Callable[..., nn.Module]],
                                                          Callable[..., nn.Module]]:
    """Declares how a factory's settings are checked before a run writes anything:
    `check(**the model node's settings)` raises a one-line ConfigError (src/tasks: check_model)."""
    def declare(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        factory.check_settings = check  # type: ignore[attr-defined]
        return factory
    return declare


def _unknown(library: str, name: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"{library} has {len(known)} names"
    return ConfigError(f"model.name={name} is not a {library} network ({hint}): list them with "
                       f"python -c \"import {library}; print({library}."
                       f"{'list_models' if library == 'timm' else 'models.list_models'}())\"")


def _timm_names() -> list[str]:
    import timm
    return timm.list_models()


def check_timm(name: str, pretrained: bool = False, **_: Any) -> None:
    """One line for a name timm does not know, and for pretrained weights in no local cache."""
    known = _timm_names()
    if name.split(".")[0] not in known:  # a pretrained tag (resnet18.a1_in1k) may follow
        raise _unknown("timm", name, known)
    if pretrained and _timm_cached(name) is None:
        raise _offline(f"neither in the Hugging Face cache nor in {_hub_checkpoints()}", name)


def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _timm_cached(name: str) -> Path | None:
    """The weights file of timm's pretrained `name` in a local cache: the Hugging Face cache
    (what timm downloads into) or torch hub's checkpoints folder (older timm), else None."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg
    cfg = get_pretrained_cfg(name, allow_unregistered=False)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        names = ([cfg.hf_hub_filename] if cfg.hf_hub_filename
                 else ["model.safetensors", "pytorch_model.bin"])
        for filename in names:
            found = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(found, str):
                return Path(found)
    if cfg.url:
        there = _hub_checkpoints() / os.path.basename(cfg.url)
        if there.is_file():
            return there
    return None


def _offline(where: str, name: str) -> ConfigError:
    return ConfigError(f"model.pretrained=true: the weights of {name} are {where} (a run never "
                       f"downloads): fetch them once on a machine with internet, or set "
                       f"model.pretrained=false")


@declares_check(check_timm)
def timm_model(input_shape: tuple[int, int, int], num_classes: int, name: str,
               pretrained: bool = False, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """timm.create_model(name) with the dataset's channels and classes (kwargs: more
    create_model arguments, e.g. drop_rate, img_size)."""
    import timm
    check_timm(name)
    more = dict(kwargs or {})
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=num_classes,
                                 in_chans=input_shape[0], **more)
    check_timm(name, pretrained=True)
    return timm.create_model(name, pretrained=True, num_classes=num_classes,
                             in_chans=input_shape[0],
                             pretrained_cfg_overlay={"file": str(_timm_cached(name))}, **more)


def _torchvision_names() -> list[str]:
    import torchvision
    return torchvision.models.list_models()


def check_torchvision(name: str, pretrained: bool = False, **_: Any) -> None:
    """One line for a name torchvision.models does not know, and for pretrained weights that
    are not in torch hub's cache."""
    known = _torchvision_names()
    if name not in known:
        raise _unknown("torchvision", name, known)
    if pretrained:
        cached = _cached_weights(name)
        if not cached.is_file():
            raise _offline(f"not in {cached.parent}", name)


def _cached_weights(name: str) -> Path:
    import torchvision
    weights = torchvision.models.get_model_weights(name).DEFAULT
    return _hub_checkpoints() / os.path.basename(weights.url)


def _first_conv_to(model: nn.Module, channels: int) -> None:
    """Replace the first 3-channel Conv2d by one that reads `channels` channels (grey images
    into an RGB network), its other settings kept."""
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3:
                setattr(parent, child_name, nn.Conv2d(
                    channels, child.out_channels, child.kernel_size, child.stride,
                    child.padding, child.dilation, child.groups, child.bias is not None,
                    child.padding_mode))
                return
    raise ConfigError(f"model=torchvision: found no 3-channel convolution to read "
                      f"{channels}-channel images: use 3-channel data or model=timm (in_chans)")


@declares_check(check_torchvision)
def torchvision_model(input_shape: tuple[int, int, int], num_classes: int, name: str,
                      pretrained: bool = False,
                      kwargs: dict[str, Any] | None = None) -> nn.Module:
    """torchvision.models.get_model(name) with the dataset's classes; another number of input
    channels than 3 replaces the first convolution (kwargs: more builder arguments)."""
    import torchvision
    check_torchvision(name, pretrained)
    more = dict(kwargs or {})
    if pretrained:
        # the cached weights, then a new head for this dataset's classes
        model = torchvision.models.get_model(name, weights="DEFAULT", **more)
        _new_head(model, num_classes)
    else:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **more)
    if input_shape[0] != 3:
        _first_conv_to(model, input_shape[0])
    return model


def _new_head(model: nn.Module, num_classes: int) -> None:
    """The last nn.Linear, replaced by one with `num_classes` outputs."""
    last = None
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                last = (parent, child_name, child)
    if last is None:
        raise ConfigError("model.pretrained=true: the network has no linear head to replace: "
                          "set model.pretrained=false")
    parent, child_name, child = last
    if child.out_features != num_classes:
        setattr(parent, child_name, nn.Linear(child.in_features, num_classes,
                                              bias=child.bias is not None))
