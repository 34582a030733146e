"""A/B timing for the benchmarks: alternating, repeated, median ratio with its spread.

`alternate(baseline, candidate, pairs)` times the two callables in `pairs` alternating pairs
(which one runs first alternates as well, after one warm-up call of each) and reports the median
of the per-pair ratios baseline / candidate with the smallest and largest pair, so a drift of the
machine's speed during the run hits both sides alike.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def alternate(baseline: Callable[[], Any], candidate: Callable[[], Any], pairs: int = 5,
              sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """{'ratio': median baseline/candidate time, 'ratio_min', 'ratio_max', 'baseline_s',
    'candidate_s' (medians), 'pairs'}; `sync` waits for queued device work (CUDA)."""
    if pairs < 1:
        raise ValueError(f"pairs={pairs}: use at least 1")

    def timed(fn: Callable[[], Any]) -> float:
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    timed(baseline)
    timed(candidate)
    base, cand = [], []
    for i in range(pairs):
        if i % 2 == 0:
            base.append(timed(baseline))
            cand.append(timed(candidate))
        else:
            cand.append(timed(candidate))
            base.append(timed(baseline))
    ratios = [b / c for b, c in zip(base, cand, strict=True)]
    return {"ratio": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios), "baseline_s": statistics.median(base),
            "candidate_s": statistics.median(cand), "pairs": pairs}


def machine() -> dict[str, Any]:
    """The hardware and versions a result was measured on."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "torch": torch.__version__, "cpus": os.cpu_count(),
                            "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
