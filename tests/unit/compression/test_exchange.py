"""The worker exchange: per-worker momentum, checkpointed state, resumed compressed runs."""

from __future__ import annotations

import json

import pytest
import torch

import src.compression.exchange
import src.tasks.classify
from src.compression.compressors import MinMax, Sign
from src.compression.exchange import GradientExchange
from tests.helpers.runs import compose_train, die_after_first_checkpoint, summary


def params_with_grads(*shapes: tuple[int, ...]) -> list[torch.nn.Parameter]:
    out = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.zeros(shape))
        p.grad = torch.zeros(shape)
        out.append(p)
    return out


def test_signum_workers_send_the_sign_of_their_own_momentum():
    ps = params_with_grads((3, 4), (5,))
    ex = GradientExchange(Sign(), aggregate="vote", tie="zero", worker_momentum=0.9)
    ex.setup(ps, workers=2, local_workers=[0, 1])
    ex.start_epoch(lambda stream: stream)
    g1, g2 = torch.randn(2, ex.n), torch.randn(2, ex.n)
    for g in (g1, g2):
        ex.grads.copy_(g)
        ex.reduce()
    momentum = 0.9 * (0.1 * g1) + 0.1 * g2
    assert torch.allclose(ex.state["momentum"], momentum)
    votes = torch.sign(momentum).sum(dim=0)
    got = torch.cat([p.grad.reshape(-1) for p in ps])
    assert torch.equal(got, torch.sign(votes))


def test_state_round_trips_through_a_checkpoint():
    ps = params_with_grads((4, 4))
    ex = GradientExchange(MinMax(3), error_feedback=True)
    ex.setup(ps, workers=3, local_workers=[0, 1, 2])
    ex.start_epoch(lambda stream: stream)
    ex.grads.copy_(torch.randn(3, 16))
    ex.reduce()
    saved = ex.state_dict()
    other = GradientExchange(MinMax(3), error_feedback=True)
    other.setup(params_with_grads((4, 4)), workers=3, local_workers=[0, 1, 2])
    other.load_state_dict(saved)
    for key, value in ex.state.items():
        assert torch.equal(other.state[key], value)
    assert {"max", "min", "error"} <= set(saved["state"])


@pytest.mark.parametrize(("aggregate", "compressor"), [("vote", "scaled_sign")])
def test_vote_refuses_scaled_levels(aggregate, compressor):
    from src.core.errors import ConfigError

    cfg = compose_train([f"compression={compressor}", f"compression.aggregate={aggregate}"])
    with pytest.raises(ConfigError, match="aggregate=mean"):
        src.compression.exchange.build_exchange(cfg.compression)


def test_interrupted_compressed_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    args = ["debug=fast", "epochs=3", "device=cpu", "optimizer=compressed_sgd_vote",
            "num_bits=2", "compression.compressor.decay=0.7", "compression=minmax",
            "trainer.progress=false", "logger=none"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    src.tasks.classify.run(compose_train(args), whole)

    die_after_first_checkpoint(monkeypatch)  # killed right after epoch 1's checkpoint
    with pytest.raises(KeyboardInterrupt):
        src.tasks.classify.run(compose_train(args), cut)
    assert summary(cut)["status"] == "interrupted"
    src.tasks.classify.run(compose_train(args), cut)
    assert summary(cut)["metrics"] == summary(whole)["metrics"]
    a = torch.load(whole / "checkpoint.pt", weights_only=True)
    b = torch.load(cut / "checkpoint.pt", weights_only=True)
    for key, value in a["exchange"]["state"].items():
        assert torch.equal(value, b["exchange"]["state"][key])
    assert a["exchange"]["level_counts"].tolist() == b["exchange"]["level_counts"].tolist()


def test_full_training_set_evaluation_every_n_steps(tmp_path):
    cfg = compose_train(["debug=fast", "device=cpu", "optimizer=compressed_sgd",
                         "trainer.log_every=1", "trainer.train_eval_every=4",
                         "trainer.progress=false", "logger=none"])
    src.tasks.classify.run(cfg, tmp_path)
    steps = [json.loads(x) for x in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps] == list(range(1, 9))
    full = [r for r in steps if "full_train_acc" in r]
    assert [r["step"] for r in full] == [4, 8]
    assert all(0.0 <= r["full_train_acc"] <= 1.0 and r["full_train_loss"] > 0 for r in full)
