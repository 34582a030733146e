"""Keep ratios (fractions of the prunable weights kept) from a spacing block."""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig

from src.core.errors import ConfigError


def _geometric(start: float, stop: float, count: int) -> np.ndarray:
    return np.geomspace(start, stop, count)


def _linear(start: float, stop: float, count: int) -> np.ndarray:
    return np.linspace(start, stop, count)


SPACINGS = {"geometric": _geometric, "linear": _linear}


def keep_ratios(spec: DictConfig) -> list[float]:
    """The experiment's keep ratios, largest first, from `spacing` (geometric | linear with
    start, stop, count; or list with `values`). Each must lie in (0, 1]."""
    if spec.spacing == "list":
        values = [float(v) for v in spec["values"] or []]
    elif spec.spacing in SPACINGS:
        if not isinstance(spec.count, int) or spec.count < 1:
            raise ConfigError(f"pruning.keep_ratios.count={spec.count}: use an integer >= 1")
        values = SPACINGS[spec.spacing](float(spec.start), float(spec.stop), spec.count).tolist()
    else:
        raise ConfigError(f"pruning.keep_ratios.spacing={spec.spacing} is not a spacing: use "
                          f"geometric, linear or list")
    if not values:
        raise ConfigError("pruning.keep_ratios gives no ratio: set values=[...] for spacing=list")
    bad = [v for v in values if not 0.0 < v <= 1.0]
    if bad:
        raise ConfigError(f"pruning.keep_ratios holds {bad}: keep ratios are fractions in (0, 1]")
    return sorted({round(v, 12) for v in values}, reverse=True)
