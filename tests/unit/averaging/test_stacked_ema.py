"""The averages of stacked runs are each run's own EMA: its decays, its warm-up, its BatchNorm
statistics and integer buffers."""

from __future__ import annotations

import torch
from torch import nn

from src.averaging.ema import EMA
from src.averaging.stacked import StackedEMA
from src.engine.stack import Stack


def net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 2))


def test_each_slot_averages_with_its_own_decays_and_warmup():
    settings = [([0.9, 0.99], None), ([0.5, 0.999], {"gamma": 1.0, "power": 0.75})]
    steps = 5
    alone, emas = [net(k) for k in range(2)], []
    for model, (decays, warmup) in zip(alone, settings, strict=True):
        emas.append(EMA(model, decays, warmup))
    stacked_nets = [net(k) for k in range(2)]
    slot_emas = [EMA(m, d, w) for m, (d, w) in zip(stacked_nets, settings, strict=True)]
    stack = Stack(stacked_nets[0], 2, torch.zeros(3, 4))
    averages = StackedEMA(stack.flat, stack.buffers, stack.names, stack.sizes, 2)
    for k in range(2):
        stack.load(k, stacked_nets[k])
        averages.load_slot(k, slot_emas[k])
    weights = torch.stack([StackedEMA.weights(e, steps) for e in slot_emas], dim=1)  # (S, K, D)
    torch.manual_seed(7)
    for step in range(steps):
        x = torch.randn(2, 3, 4)
        for k, model in enumerate(alone):  # the solo runs: a step, then their EMA update
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.1 * (step + 1) * (k + 1))
            model.train()(x[k])
            emas[k].update()
        with torch.no_grad():  # the stack: the same step, then one update of every average
            for k, model in enumerate(alone):
                stack.load(k, model)
        averages.update(weights[step])
    for k in range(2):
        averages.store_slot(k, slot_emas[k], steps)
        assert slot_emas[k].updates == emas[k].updates == steps
        for name in emas[k].names:
            want, got = emas[k].state_of(name), slot_emas[k].state_of(name)
            for key in want:
                torch.testing.assert_close(got[key], want[key], rtol=1e-6, atol=1e-7)
