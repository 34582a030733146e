"""Objects built from config nodes (`_target_`), with a component's own ValueError as one line."""

from __future__ import annotations

import functools
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig

from src.core.errors import ConfigError, UserError


def build(node: DictConfig, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, with a component's own ValueError reported as one line; a
    partial (optimizers, schedulers) reports the ValueError of its later call the same way."""
    try:
        built = instantiate(node, **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, UserError):
            raise e.__cause__ from None
        if isinstance(e.__cause__, ValueError):
            raise ConfigError(rejected(node, e.__cause__)) from None
        raise
    if not isinstance(built, functools.partial):
        return built

    @functools.wraps(built)
    def checked(*args: Any, **more: Any) -> Any:
        try:
            return built(*args, **more)
        except ValueError as e:
            raise ConfigError(rejected(node, e)) from None

    return checked


def rejected(node: DictConfig, e: ValueError) -> str:
    key = node._key() if hasattr(node, "_key") else None  # the config group, e.g. optimizer
    where = f"{key} ({node.get('_target_')})" if key else str(node.get("_target_"))
    return (f"{where} rejects its settings: {str(e).splitlines()[0]}: change that value "
            f"(python train.py --cfg job prints every setting)")


def check_settings(node: DictConfig) -> None:
    """The one-line ConfigError that building `node` would raise for its settings, raised
    before a run writes anything; factories declare how to tell (`check_settings`, e.g.
    src/models/named.py: a timm name that timm does not know)."""
    target = node.get("_target_")
    if target is None:
        return
    try:
        built = get_method(str(target))
    except Exception as e:  # Hydra's ImportError, or the module's own error as it loads
        where = node._key() if hasattr(node, "_key") else "_target_"
        reason = " ".join(str(e).split())[:160]
        raise ConfigError(f"{where}: cannot import {target} ({reason}): put its package on "
                          f"PYTHONPATH (docs/extending.md)") from None
    check = getattr(built, "check_settings", None)
    if check is not None:
        check(**{k: v for k, v in node.items() if not str(k).startswith("_")})
