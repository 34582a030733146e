"""Hydra imports the project's plugin module (hydra_plugins/trainkit) on every start of every
entry point: it must not pull in torch (over a second) or submitit."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers.runs import ROOT


def test_the_plugin_module_imports_neither_torch_nor_submitit():
    code = ("import sys, hydra_plugins.trainkit; "
            "print(sorted(m for m in ('torch', 'submitit') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip()
    assert out == "[]"
