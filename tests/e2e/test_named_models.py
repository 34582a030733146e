"""Networks by name (model=timm, model=torchvision) through the rest of the framework: real
workers under torchrun (gloo, the DDP hook) reach the parameters of simulated ones with 1-bit
majority vote, and a prune-and-retrain experiment masks and counts the FLOPs of a timm network."""

from __future__ import annotations

import json

import pytest
import torch

from tests.e2e.test_workers import DETERMINISTIC, torchrun
from tests.helpers.runs import run_script, train

# a timm ViT (LayerNorm only: no statistics that differ between a shard and a process)
VIT = ["model=timm", "model.name=vit_tiny_patch16_224", "+model.kwargs.img_size=32",
       "+model.kwargs.patch_size=8", "dataset=fake", "averaging.decays=[0.9]"]


@pytest.mark.slow
def test_a_timm_network_on_real_workers_reaches_the_parameters_of_simulated_ones(tmp_path):
    args = [*DETERMINISTIC, *VIT]
    real, simulated = tmp_path / "real", tmp_path / "simulated"
    proc = torchrun(2, args, real)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    train(simulated, *args, "workers=2")
    a = torch.load(real / "checkpoint.pt", weights_only=True)
    b = torch.load(simulated / "checkpoint.pt", weights_only=True)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=1e-6)
    for key, value in a["ema"]["averages"]["ema_0.9"].items():  # the EMA follows both alike
        torch.testing.assert_close(value, b["ema"]["averages"]["ema_0.9"][key], rtol=0,
                                   atol=1e-6)
    assert json.loads((real / "summary.json").read_text())["processes"] == 2


@pytest.mark.slow
def test_a_timm_network_is_pruned_masked_and_its_flops_counted(tmp_path):
    run = tmp_path / "prune"
    proc = run_script("train.py", ["experiment=prune_resnet20_cifar10", "dataset=fake",
                                   "debug=fast", "model=timm", "model.name=resnet10t",
                                   "pruning.keep_ratios.count=2", "logger=none",
                                   f"hydra.run.dir={run}"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cells = [json.loads(p.read_text()) for p in sorted((run / "cells").glob("*.json"))]
    assert len(cells) == 2
    for cell in cells:
        assert cell["keep"] < 1 and 0 < cell["flops_kept_fraction"] < 1, cell
