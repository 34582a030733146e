"""Many states of one model evaluated together (torch.func vmap) against one at a time."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from src.data.loader import DeviceData
from src.engine.evaluation import distinct, evaluate, evaluate_states
from src.engine.trainer import load_state
from src.models.mean_field import mnas_cnn
from src.models.mlp import mlp
from src.models.mnist_cnn import mnist_cnn
from src.models.resnet_cifar import resnet20
from src.models.vit import vit

BUILDERS = {"mlp": lambda s: mlp(s, 10, width=32), "resnet20": lambda s: resnet20(s, 10),
            "mnist_cnn": lambda s: mnist_cnn(s, 10),
            "vit": lambda s: vit(s, 10, dim=32, depth=2, heads=2),
            "mnas": lambda s: mnas_cnn(s, 10, width=8)}


def split(shape: tuple[int, ...], n: int = 24, batch: int = 8) -> DeviceData:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    return DeviceData(x, y, (120.0,) * shape[0], (60.0,) * shape[0], batch, False, False)


def perturbed(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            noise = 0.05 * torch.randn(v.shape, generator=g)
            state[k] = (v + noise).abs() if "running_var" in k else v + noise
        else:
            state[k] = v.clone()
    return state


@pytest.mark.parametrize("name", list(BUILDERS))
def test_states_evaluated_together_match_one_at_a_time(name):
    shape = (1, 28, 28) if name == "mnist_cnn" else (3, 32, 32)
    torch.manual_seed(0)
    model = BUILDERS[name](shape).eval()
    for m in model.modules():  # BatchNorms with statistics, as after training
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
    data = split(shape)
    states = [perturbed(model, s) for s in range(3)]
    states.append(states[1])  # a best state equal to a final one: evaluated once
    together = evaluate_states(model, states, data, group=2)  # vmap: two groups of two
    one_by_one = evaluate_states(model, states, data, group=1)  # the CPU default
    shadow = BUILDERS[name](shape)
    for state, got, alone in zip(states, together, one_by_one, strict=True):
        load_state(shadow, state)
        want = evaluate(shadow, data)
        assert alone == want  # the model's own kernels: the same numbers exactly
        assert got["acc"] == want["acc"]
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5, abs=1e-6)
    assert together[3] == together[1]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_distinct_states_are_found_by_value():
    a = {"w": torch.ones(2)}
    b = {"w": torch.zeros(2)}
    unique, index = distinct([a, b, {"w": torch.ones(2)}, b])
    assert len(unique) == 2 and index == [0, 1, 0, 1]


def test_each_distinct_state_runs_once_per_batch(monkeypatch):
    import src.engine.evaluation as metrics

    calls = []
    real = metrics.functional_call

    def counted(module, tensors, args):
        calls.append(args[0].shape[0])
        return real(module, tensors, args)

    monkeypatch.setattr(metrics, "functional_call", counted)
    model = mlp((3, 32, 32), 10, width=16)
    data = split((3, 32, 32), n=24, batch=8)  # three batches
    states = [perturbed(model, 0), perturbed(model, 1)]
    evaluate_states(model, [states[0], states[1], states[0]], data, group=1)
    assert len(calls) == 2 * 3  # two distinct states, three batches each
