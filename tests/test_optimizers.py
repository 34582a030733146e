"""The optimizer configs build and step; signSGD follows its update rule."""

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.optim.sign_sgd import SignSGD, sign_with_random_zeros
from tests.conftest import CONF


@pytest.mark.parametrize("path", sorted((CONF / "optimizer").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_optimizer_config_builds_and_reduces_a_quadratic(path):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(20))
    opt = instantiate(OmegaConf.load(path))([w])
    start = (w.detach() ** 2).sum().item()
    for _ in range(20):
        opt.zero_grad()
        (w**2).sum().backward()
        opt.step()
    assert (w.detach() ** 2).sum().item() < start


def test_momentum_defaults_are_the_weight_averaging_study():
    cfg = OmegaConf.load(CONF / "optimizer" / "momentum.yaml")
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov) == (0.1, 0.9, 1e-4, False)


def test_sign_sgd_step_is_lr_times_sign():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = SignSGD([w], lr=0.5)
    w.grad = torch.tensor([0.3, -7.0, 2.0])
    opt.step()
    assert torch.equal(w.detach(), torch.tensor([0.5, -1.5, 2.5]))


def test_zero_gradients_become_random_signs():
    torch.manual_seed(0)
    signs = sign_with_random_zeros(torch.zeros(10_000))
    assert set(signs.unique().tolist()) == {-1.0, 1.0}
    assert abs(signs.mean().item()) < 0.05  # balanced coin
    assert torch.equal(sign_with_random_zeros(torch.tensor([2.0, -0.1])), torch.tensor([1.0, -1.0]))


def test_sign_sgd_rejects_bad_lr():
    with pytest.raises(ValueError, match=r"optimizer\.lr=0"):
        SignSGD([torch.nn.Parameter(torch.zeros(1))], lr=0)
