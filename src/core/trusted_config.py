"""Configs read back from a run directory (eval.py, pruning's from_run) may come from someone
else. Hydra would build whatever `_target_` they name, so they are checked first: only this
project's own modules and the classes its config groups use may be built."""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from src.core.errors import ConfigError
from src.core.files import CONF

OWN = "src."  # the project's package


@functools.cache
def allowed_targets() -> frozenset[str]:
    """Every `_target_` that a config file of this project names (torch, torchvision, timm and
    optuna classes among them)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("_target_"), str):
                found.add(node["_target_"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in CONF.rglob("*.yaml"):
        walk(yaml.safe_load(path.read_text()))
    return frozenset(found)


def own(target: str) -> bool:
    """True for a function or class defined in one of this project's modules (not something a
    module merely imports, such as src.lifecycle.lock.os.system)."""
    module, _, name = target.rpartition(".")
    if not module.startswith(OWN) or any(part.startswith("_") for part in target.split(".")):
        return False
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return False
    return found is not None and getattr(found, "__module__", None) == module


def check_targets(cfg: DictConfig, source: Path) -> None:
    """ConfigError naming the first `_target_` in `cfg` that this project does not build."""
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            target = node.get("_target_")
            if target is not None and not (
                    isinstance(target, str) and (target in allowed_targets() or own(target))):
                raise ConfigError(f"{source} asks to build {target!r}, which no config of this "
                                  f"project builds: refused (a run directory from elsewhere "
                                  f"may carry code); evaluate runs made with this project")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(OmegaConf.to_container(cfg, resolve=False))
