"""Each schedule against its torch.optim.lr_scheduler equivalent and the spec's formulas."""

import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.optim import lr_scheduler

from src.optim.schedulers import scale_milestones
from tests.helpers.runs import CONF

SPE, EPOCHS = 7, 12  # steps per epoch, epochs


def lrs(sched: lr_scheduler.LRScheduler, per_epoch: bool) -> list[float]:
    """lr used at every optimizer step; a per-epoch scheduler is stepped at epoch ends."""
    opt = sched.optimizer
    out = []
    for step in range(SPE * EPOCHS):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if not per_epoch or (step + 1) % SPE == 0:
            sched.step()
    return out


def ours(name: str, **overrides) -> lr_scheduler.LRScheduler:
    cfg = OmegaConf.merge(OmegaConf.load(CONF / "scheduler" / f"{name}.yaml"), overrides)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    return instantiate(cfg)(opt, steps_per_epoch=SPE, epochs=EPOCHS)


def torch_opt() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


@pytest.mark.parametrize(("name", "reference", "per_epoch"), [
    ("constant", lambda o: lr_scheduler.ConstantLR(o, factor=1.0, total_iters=0), False),
    ("cosine", lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=SPE * EPOCHS), False),
    ("linear", lambda o: lr_scheduler.LinearLR(o, 1.0, 0.0, total_iters=SPE * EPOCHS), False),
    # Milestones 90/135 of 180 scale to 6/9 of 12 epochs; 60/120/160 of 180 to 4/8/11.
    ("multistep_he", lambda o: lr_scheduler.MultiStepLR(o, [6, 9], 0.1), True),
    ("multistep_cutout", lambda o: lr_scheduler.MultiStepLR(o, [4, 8, 11], 0.2), True),
    ("step_effnet", lambda o: lr_scheduler.StepLR(o, step_size=2, gamma=0.97), True),
])
def test_schedule_matches_torch_equivalent(name, reference, per_epoch):
    expected = lrs(reference(torch_opt()), per_epoch)
    got = lrs(ours(name), per_epoch=False)
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_milestones_fall_on_the_spec_epochs_at_180_epochs():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    cfg = OmegaConf.load(CONF / "scheduler" / "multistep_he.yaml")
    sched = instantiate(cfg)(opt, steps_per_epoch=2, epochs=180)
    factor = sched.lr_lambdas[0]
    assert factor(2 * 90 - 1) == 1.0 and factor(2 * 90) == pytest.approx(0.1)
    assert factor(2 * 135 - 1) == pytest.approx(0.1) and factor(2 * 135) == pytest.approx(0.01)


@pytest.mark.parametrize("epochs,expected", [
    (180, (90, 135)), (12, (6, 9)), (6, (3, 5)),  # 4.5 goes to 5, not to the even 4
    (3, (1, 2)), (2, (1, 1)), (1, (1, 1)), (360, (180, 270)), (7, (4, 5)),
])
def test_scaled_milestones_keep_every_drop_in_order(epochs, expected):
    assert scale_milestones([90, 135], 180, epochs) == expected


@pytest.mark.parametrize("epochs", [2, 3, 6, 12])
def test_a_short_multistep_run_makes_both_drops(epochs):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    cfg = OmegaConf.load(CONF / "scheduler" / "multistep_he.yaml")
    factor = instantiate(cfg)(opt, steps_per_epoch=1, epochs=epochs).lr_lambdas[0]
    assert factor(0) == 1.0 and factor(epochs - 1) == pytest.approx(0.01)


def test_cutouts_three_drops_stay_distinct_while_the_run_has_room():
    assert scale_milestones([60, 120, 160], 180, 4) == (1, 2, 3)
    assert scale_milestones([60, 120, 160], 180, 6) == (2, 4, 5)


@pytest.mark.parametrize("milestones", [[135, 90], [0, 90], [90, 180]])
def test_milestones_out_of_order_or_range_are_rejected(milestones):
    with pytest.raises(ValueError, match=r"scheduler\.milestones"):
        scale_milestones(milestones, 180, 12)


@pytest.mark.parametrize("name", ["linear", "cosine", "constant", "multistep_cutout"])
def test_linear_warmup_is_step_over_w(name):
    factor = ours(name, warmup_steps=10).lr_lambdas[0]
    assert [factor(s) for s in range(10)] == pytest.approx([s / 10 for s in range(10)])
    assert factor(10) == pytest.approx(1.0)


def test_warmup_formulas_after_warmup():
    T, W = SPE * EPOCHS, 10
    lin = ours("linear", warmup_steps=W).lr_lambdas[0]
    cos = ours("cosine", warmup_steps=W).lr_lambdas[0]
    for s in (W, 30, T - 1, T):
        assert lin(s) == pytest.approx(max(0.0, (T - s) / (T - W)))
        assert cos(s) == pytest.approx(0.5 * (1 + math.cos(math.pi * (s - W) / (T - W))))


def test_warmup_longer_than_the_run_is_rejected():
    with pytest.raises(ValueError, match="warmup_steps=1000"):
        ours("cosine", warmup_steps=1000)
