"""The optimizer configs build and step; the seed's named optimizers are presets of pieces."""

import pytest
import torch
from hydra.utils import instantiate

from tests.helpers.runs import CONF, compose_train


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "optimizer").glob("*.yaml")))
def test_every_optimizer_config_builds_and_reduces_a_quadratic(name):
    cfg = compose_train([f"optimizer={name}", "optimizer.lr=0.01"])
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(20))
    opt = instantiate(cfg.optimizer)([w])
    start = (w.detach() ** 2).sum().item()
    for _ in range(20):
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        # Polyak-type optimizers (momo, prox_sps, ...) take the loss, as the trainer passes it.
        opt.step(loss=loss.detach()) if getattr(opt, "needs_loss", False) else opt.step()
    assert (w.detach() ** 2).sum().item() < start


def test_momentum_defaults_are_the_weight_averaging_study():
    cfg = compose_train(["optimizer=momentum"]).optimizer
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov) == (0.1, 0.9, 1e-4, False)


@pytest.mark.parametrize(("name", "compressor", "workers"), [
    ("sign_sgd", "Sign", 1), ("compressed_sgd", "MinMax", 1),
    ("compressed_sgd_vote", "MinMax", 2), ("signum", "Sign", 1), ("signum_vote", "Sign", 2)])
def test_seed_optimizers_are_plain_sgd_plus_a_compression(name, compressor, workers):
    cfg = compose_train([f"optimizer={name}"])
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.momentum == 0.0
    assert cfg.compression.compressor._target_.endswith(compressor)
    assert cfg.compression.aggregate == "vote" and cfg.workers == workers


def test_compressed_sgd_takes_num_bits_from_the_top_level():
    cfg = compose_train(["optimizer=compressed_sgd", "num_bits=5"])
    assert cfg.compression.compressor.num_bits == 5
