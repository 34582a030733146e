"""A/B timing for the benchmarks: alternating, repeated, median ratio with its spread.

`alternate(baseline, candidate, pairs)` times the two callables in `pairs` alternating pairs
(which one runs first alternates as well, after one warm-up call of each) and reports the median
of the per-pair ratios baseline / candidate with the smallest and largest pair, so a drift of the
machine's speed during the run hits both sides alike. `interleave` does the same for any number
of variants whose measurement is a cost of their own (seconds per sample from a training log,
say), in rounds whose order rotates, and `ratio` summarises two variants' rounds.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def interleave(measures: dict[str, Callable[[], float]], rounds: int = 5,
               warmup: bool = True) -> dict[str, list[float]]:
    """Each variant's measurements (costs: lower is faster) over `rounds` rounds; every round
    runs each variant once, round i starting with variant i mod k, after one warm-up call of
    each (unless warmup=False)."""
    if rounds < 1:
        raise ValueError(f"rounds={rounds}: use at least 1")
    names = list(measures)
    if warmup:
        for name in names:
            measures[name]()
    out: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names[i % len(names):] + names[:i % len(names)]:
            out[name].append(measures[name]())
    return out


def ratio(baseline: list[float], candidate: list[float]) -> dict[str, float]:
    """Per-round baseline / candidate cost ratios: {'ratio' (median), 'ratio_min', 'ratio_max',
    'rounds'} (> 1: the candidate is faster)."""
    ratios = [b / c for b, c in zip(baseline, candidate, strict=True)]
    return {"ratio": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios), "rounds": len(ratios)}


def rates(costs: dict[str, list[float]], unit: str) -> dict[str, float]:
    """{'<name>_<unit>': 1 / median cost} of each variant's rounds (e.g. unit 'img_s')."""
    return {f"{name}_{unit}": 1.0 / statistics.median(c) for name, c in costs.items()}


def alternate(baseline: Callable[[], Any], candidate: Callable[[], Any], pairs: int = 5,
              sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """{'ratio': median baseline/candidate time, 'ratio_min', 'ratio_max', 'baseline_s',
    'candidate_s' (medians), 'pairs'}; `sync` waits for queued device work (CUDA)."""
    if pairs < 1:
        raise ValueError(f"pairs={pairs}: use at least 1")

    def timed(fn: Callable[[], Any]) -> Callable[[], float]:
        def measure() -> float:
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            return time.perf_counter() - t0
        return measure

    times = interleave({"baseline": timed(baseline), "candidate": timed(candidate)}, pairs)
    base, cand = times["baseline"], times["candidate"]
    summary = ratio(base, cand)
    return {"ratio": summary["ratio"], "ratio_min": summary["ratio_min"],
            "ratio_max": summary["ratio_max"], "baseline_s": statistics.median(base),
            "candidate_s": statistics.median(cand), "pairs": pairs}


def machine() -> dict[str, Any]:
    """The hardware and versions a result was measured on."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "torch": torch.__version__, "cpus": os.cpu_count(),
                            "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
