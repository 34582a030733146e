"""The stacked optimizers step K runs as torch.optim steps each run alone, each with its own
hyperparameters, and a slot's state is the torch optimizer's own (checkpoints of stacked runs are
ordinary checkpoints)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from src.optim.stacked import NotStackable, build_stacked, stacked_kind

# float32 per-element updates: torch's update and the stacked one differ in how they round
# (a fused multiply-add here, a separate multiply there), ~1 ulp per step
RTOL = 1e-5


def nets(slots: int) -> list[nn.Module]:
    torch.manual_seed(0)
    return [nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)) for _ in range(slots)]


def train_alone(net: nn.Module, opt: torch.optim.Optimizer, batches: list[torch.Tensor],
                lrs: list[float]) -> None:
    for x, lr in zip(batches, lrs, strict=True):
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        opt.step()


@torch.no_grad()
def put(row: torch.Tensor, params: list[torch.Tensor]) -> None:
    """A flat row into the parameters it was made of."""
    pieces = row.split([p.numel() for p in params])
    torch._foreach_copy_(params, [t.view_as(p) for t, p in zip(pieces, params, strict=True)])


def train_stacked(models: list[nn.Module], opts: list[torch.optim.Optimizer],
                  batches: list[list[torch.Tensor]], lrs: list[list[float]]) -> tuple:
    params = [list(m.parameters()) for m in models]
    flat = torch.stack([torch.cat([p.detach().reshape(-1) for p in ps]) for ps in params])
    stacked = build_stacked(opts[0], flat)
    for k, (opt, ps) in enumerate(zip(opts, params, strict=True)):
        stacked.load_slot(k, opt, ps)
    for step in range(len(batches[0])):
        grads = []
        for k, ps in enumerate(params):  # each slot's gradient at the stacked weights
            put(flat[k], ps)
            for p in ps:
                p.grad = None
            models[k](batches[k][step]).pow(2).mean().backward()
            grads.append(torch.cat([p.grad.reshape(-1) for p in ps]))
        stacked.step(torch.stack(grads), torch.tensor([lr[step] for lr in lrs]))
    for k, (opt, ps) in enumerate(zip(opts, params, strict=True)):
        put(flat[k], ps)
        stacked.store_slot(k, opt, ps)
    return flat, stacked


CASES = {
    "sgd, momentum 0 and 0.9, dampening, weight decay": (
        torch.optim.SGD, [dict(momentum=0.0), dict(momentum=0.9, weight_decay=1e-2),
                          dict(momentum=0.9, dampening=0.9)]),
    "nesterov": (torch.optim.SGD, [dict(momentum=0.9, nesterov=True),
                                   dict(momentum=0.5, nesterov=True, weight_decay=1e-3)]),
    "adam": (torch.optim.Adam, [dict(betas=(0.9, 0.999)), dict(betas=(0.5, 0.9), eps=1e-6,
                                                               weight_decay=1e-2)]),
    "adamw": (torch.optim.AdamW, [dict(weight_decay=0.1), dict(betas=(0.8, 0.99))]),
}


@pytest.mark.parametrize("case", CASES)
def test_each_slot_steps_as_its_torch_optimizer_would_alone(case):
    kind, settings = CASES[case]
    slots, steps = len(settings), 6
    torch.manual_seed(1)
    batches = [[torch.randn(8, 5) for _ in range(steps)] for _ in range(slots)]
    lrs = [[0.1 * (k + 1) * 0.9 ** s for s in range(steps)] for k in range(slots)]
    alone = nets(slots)
    alone_opts = [kind(n.parameters(), lr=0.1, **s) for n, s in zip(alone, settings, strict=True)]
    for k in range(slots):
        train_alone(alone[k], alone_opts[k], batches[k], lrs[k])
    stacked_nets = nets(slots)
    opts = [kind(n.parameters(), lr=0.1, **s) for n, s in zip(stacked_nets, settings, strict=True)]
    train_stacked(stacked_nets, opts, batches, lrs)
    for k in range(slots):
        for a, b in zip(alone[k].parameters(), stacked_nets[k].parameters(), strict=True):
            torch.testing.assert_close(b, a, rtol=RTOL, atol=1e-7)
        # the slot's state is the torch optimizer's own, tensor for tensor
        want, got = alone_opts[k].state_dict(), opts[k].state_dict()
        assert want["state"].keys() == got["state"].keys()
        for i, state in want["state"].items():
            assert state.keys() == got["state"][i].keys()
            for name, value in state.items():
                torch.testing.assert_close(got["state"][i][name], value, rtol=RTOL, atol=1e-7)


def test_a_slot_resumes_from_its_torch_state_mid_training():
    """Three steps alone, the state into a stack, three stacked steps = six steps alone."""
    torch.manual_seed(2)
    batches = [torch.randn(8, 5) for _ in range(6)]
    lrs = [0.05] * 6
    (alone,) = nets(1)
    alone_opt = torch.optim.SGD(alone.parameters(), lr=0.05, momentum=0.9)
    train_alone(alone, alone_opt, batches, lrs)
    (net,) = nets(1)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    train_alone(net, opt, batches[:3], lrs[:3])
    resumed = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    resumed.load_state_dict(opt.state_dict())  # as a checkpoint brings it back
    train_stacked([net], [resumed], [batches[3:]], [lrs[3:]])
    for a, b in zip(alone.parameters(), net.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=RTOL, atol=1e-7)


@pytest.mark.parametrize("make, says", [
    (lambda p: torch.optim.RMSprop(p), "RMSprop has no stacked step"),
    (lambda p: torch.optim.Adam(p, amsgrad=True), "amsgrad"),
    (lambda p: torch.optim.SGD([{"params": p[:1]}, {"params": p[1:], "lr": 1.0}], lr=0.1),
     "several parameter groups"),
])
def test_optimizers_without_a_stacked_step_say_why(make, says):
    (net,) = nets(1)
    with pytest.raises(NotStackable, match=says):
        stacked_kind(make(list(net.parameters())))
