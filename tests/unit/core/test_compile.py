"""Compiled code is cached per CPU vector width (src/core/compile.py): a graph compiled with one
width and loaded under another (ATEN_CPU_CAPABILITY, or another node sharing the folder) failed
or computed with the other width's arithmetic, so the fused step stopped equalling the eager one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
# The fused exchange step, compiled, against the eager one: "equal" when bit for bit the same.
FUSED_EQUALS_EAGER = """
import torch
from src.compression.compressors import MinMax
from tests.helpers.exchange import exchange, steps
eager = steps(*exchange(MinMax(1), "false", 4, 1003), 3)
fused = steps(*exchange(MinMax(1), "true", 4, 1003), 3)
print(torch.backends.cpu.get_cpu_capability(),
      "equal" if all(torch.equal(a, b) for a, b in zip(eager, fused, strict=True)) else "differ")
"""
CACHE_DIR = """
import os
from src.core.compile import cache_dir_for_capability
cache_dir_for_capability()
print(os.environ["TORCHINDUCTOR_CACHE_DIR"])
"""


def python(code: str, tmp: Path, **env: str) -> str:
    base = {k: v for k, v in os.environ.items()
            if k not in ("ATEN_CPU_CAPABILITY", "TORCHINDUCTOR_CACHE_DIR")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**base, "TMPDIR": str(tmp), **env}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_each_capability_has_its_own_cache_and_a_chosen_folder_is_kept(tmp_path):
    assert python(CACHE_DIR, tmp_path, ATEN_CPU_CAPABILITY="default").endswith("-default")
    chosen = str(tmp_path / "mine")
    assert python(CACHE_DIR, tmp_path, TORCHINDUCTOR_CACHE_DIR=chosen) == chosen


@pytest.mark.slow
def test_a_kernel_compiled_for_one_width_is_not_reused_under_another(tmp_path):
    # One temporary folder for both processes: inductor's default cache would be shared.
    assert python(FUSED_EQUALS_EAGER, tmp_path).endswith("equal")
    assert python(FUSED_EQUALS_EAGER, tmp_path, ATEN_CPU_CAPABILITY="default") == "DEFAULT equal"
