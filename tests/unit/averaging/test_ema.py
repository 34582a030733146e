"""EMA against torch.optim.swa_utils.AveragedModel and the spec's update rule."""

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from src.averaging.ema import EMA, ema_name


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 5))


def train_steps(model: nn.Module, steps: int, after_step) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 3, 8, 8, generator=gen)
        y = torch.randint(0, 5, (16,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        after_step()


@pytest.mark.parametrize("decay", [0.9, 0.999])
def test_matches_averaged_model_with_buffers(decay):
    model = net()
    ema = EMA(model, [decay])
    # AveragedModel copies the model on its first update; doing that at step 0 matches the
    # seed's EMA, which starts as a copy of the initial model.
    ref = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    ref.update_parameters(model)

    def both() -> None:
        ema.update()
        ref.update_parameters(model)

    train_steps(model, 300, both)
    ours = ema.state_of(ema_name(decay))
    theirs = ref.module.state_dict()
    for key, value in theirs.items():
        if value.is_floating_point():  # BatchNorm running statistics included
            torch.testing.assert_close(ours[key], value, rtol=0, atol=1e-6)
    assert ours["1.running_mean"].abs().sum() > 0


def test_several_decays_in_one_run_equal_separate_runs():
    model = net()
    multi = EMA(model, [0.9, 0.99])
    single = EMA(model, [0.99])  # a second, independent average of the same model

    def both() -> None:
        multi.update()
        single.update()

    train_steps(model, 50, both)
    for key, value in single.state_of("ema_0.99").items():
        assert torch.equal(multi.state_of("ema_0.99")[key], value)
    assert not torch.equal(multi.state_of("ema_0.9")["0.weight"],
                           multi.state_of("ema_0.99")["0.weight"])


def test_integer_buffers_are_copied_not_averaged():
    model = net()
    ema = EMA(model, [0.99])
    train_steps(model, 7, ema.update)
    assert ema.state_of("ema_0.99")["1.num_batches_tracked"].item() == 7


def test_one_update_is_the_spec_formula():
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ema = EMA(model, [0.8])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update()
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            expected = 0.8 * before[key] + 0.2 * value
            torch.testing.assert_close(ema.state_of("ema_0.8")[key], expected)


def test_warmup_follows_timm_v3():
    ema = EMA(net(), [0.9999], warmup={"gamma": 1.0, "power": 2 / 3})
    assert ema.decay_at(0.9999, 1) == 0.0  # the first update copies the model
    for t in (2, 10, 1000):
        assert ema.decay_at(0.9999, t) == pytest.approx(min(0.9999, 1 - t ** (-2 / 3)))
    assert ema.decay_at(0.9999, 10**9) == 0.9999


@pytest.mark.parametrize("gamma,power", [(1.0, 2 / 3), (10.0, 0.75)])
def test_warmup_matches_timm_model_ema_v3_step_by_step(gamma, power):
    timm_ema = pytest.importorskip("timm.utils.model_ema")
    model = net()
    ema = EMA(model, [0.99], warmup={"gamma": gamma, "power": power})
    ref = timm_ema.ModelEmaV3(model, decay=0.99, use_warmup=True, warmup_gamma=gamma,
                              warmup_power=power)
    updates = 0

    def both() -> None:
        nonlocal updates
        updates += 1  # timm's train.py passes the optimizer-update count, 1-based
        assert ema.decay_at(0.99, updates) == pytest.approx(ref.get_decay(updates), abs=1e-15)
        ema.update()
        ref.update(model, step=updates)

    train_steps(model, 30, both)
    ours = ema.state_of("ema_0.99")
    for key, value in ref.module.state_dict().items():
        torch.testing.assert_close(ours[key], value, rtol=1e-6, atol=1e-7)


def test_state_dict_round_trip_and_decay_mismatch():
    model = net()
    ema = EMA(model, [0.9, 0.99])
    train_steps(model, 5, ema.update)
    other = EMA(net(), [0.9, 0.99])
    other.load_state_dict(ema.state_dict())
    assert other.updates == 5
    for key, value in ema.state_of("ema_0.9").items():
        assert torch.equal(other.state_of("ema_0.9")[key], value)
    with pytest.raises(ValueError, match="decays"):
        EMA(net(), [0.5]).load_state_dict(ema.state_dict())


@pytest.mark.parametrize("decays", [[1.0], [0.9, 0.9], [-0.1]])
def test_bad_decays_are_rejected(decays):
    with pytest.raises(ValueError, match=r"averaging\.decays"):
        EMA(net(), decays)
