"""torch.compile for every compiled path of the project (the fused exchange, the compiled
model, the regimes steps), with inductor's on-disk cache kept per CPU vector width.

Inductor picks its C++ vector ISA from ATEN_CPU_CAPABILITY, but its FX-graph and AOTAutograd
caches (torch 2.14) do not key on that choice: a graph compiled with AVX-512 code is loaded
again under ATEN_CPU_CAPABILITY=avx2 (or on another node sharing the cache folder), and there
its wrapper fails ("tuple args required") or computes with the other width's arithmetic, so the
fused step no longer equals the eager one. One cache folder per capability keeps them apart.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def cache_dir_for_capability() -> None:
    """Point inductor at `<its default folder>-<capability>` unless the user chose a folder."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    chosen = os.environ.get(CACHE_ENV)
    if chosen is not None and not chosen.startswith(default_cache_dir()):
        return  # the user's own folder: theirs to manage
    capability = torch.backends.cpu.get_cpu_capability().lower()
    os.environ[CACHE_ENV] = f"{default_cache_dir()}-{capability}"


def compile_fn(fn: Callable[..., Any], **kwargs: Any) -> Callable[..., Any]:
    """torch.compile(fn, **kwargs), caching its kernels apart from other vector widths'."""
    cache_dir_for_capability()
    return torch.compile(fn, **kwargs)
