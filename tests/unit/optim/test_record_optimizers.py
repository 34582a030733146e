"""The optimizer records' optimizers, built from their configs, against their update formulas.

Every test takes steps on f(w) = 0.5 sum(a w^2) + c (gradient a w) in float64 and compares the
parameters with the update computed here by hand.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
from hydra.utils import instantiate

from src.optim.momo import Momo
from tests.helpers.runs import compose_train

A = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
C = 0.7  # the loss offset: its minimum is C, above the lower bound lb = 0
W0 = torch.tensor([1.0, -2.0, 0.5, 1.5], dtype=torch.float64)


def f(w: torch.Tensor) -> torch.Tensor:
    return 0.5 * (A * w * w).sum() + C


def grad(w: torch.Tensor) -> torch.Tensor:
    return A * w


def build(name: str, **hyper: object) -> tuple[torch.nn.Parameter, torch.optim.Optimizer]:
    overrides = [f"optimizer={name}", *(f"optimizer.{k}={v}" for k, v in hyper.items())]
    w = torch.nn.Parameter(W0.clone())
    return w, instantiate(compose_train(overrides).optimizer)([w])


def steps(w: torch.nn.Parameter, opt: torch.optim.Optimizer, n: int) -> list[torch.Tensor]:
    """n optimizer steps; returns the parameters after each."""
    out = []
    for _ in range(n):
        opt.zero_grad()
        loss = f(w)
        loss.backward()
        opt.step(loss=loss.detach()) if getattr(opt, "needs_loss", False) else opt.step()
        out.append(w.detach().clone())
    return out


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_sgd_m_is_momentum_with_dampening_09():
    w, opt = build("sgd_m", lr=0.1)
    w1, w2 = steps(w, opt, 2)
    g0 = grad(W0)
    close(w1, W0 - 0.1 * g0)  # torch starts the buffer at the first gradient
    close(w2, w1 - 0.1 * (0.9 * g0 + 0.1 * grad(w1)))


@pytest.mark.parametrize(("lr", "wd"), [(10.0, 0.0), (0.05, 0.0), (10.0, 0.1)])
def test_momo_two_steps_follow_the_model_based_momentum_step(lr, wd):
    w, opt = build("momo", lr=lr, weight_decay=wd)
    w1, w2 = steps(w, opt, 2)
    c = 1 + lr * wd
    # Step 1: the averages start at the first loss, gradient and <x, g>.
    g0, f0 = grad(W0), f(W0)
    t0 = max(0.0, c * f0 + W0 @ g0 - c * (W0 @ g0)) / (g0 @ g0)
    close(w1, (W0 - min(lr, t0) * g0) / c)
    # Step 2: beta = 0.9 averages of loss, gradient and <x, g>.
    g1, f1 = grad(w1), f(w1)
    d = 0.9 * g0 + 0.1 * g1
    f_avg = 0.9 * f0 + 0.1 * f1
    gamma = 0.9 * (W0 @ g0) + 0.1 * (w1 @ g1)
    t1 = max(0.0, c * f_avg + d @ w1 - c * gamma) / (d @ d)
    close(w2, (w1 - min(lr, t1) * d) / c)
    assert float(opt.step_size) == pytest.approx(float(t1), rel=1e-10)


@pytest.mark.parametrize(("lr", "wd"), [(1.0, 0.0), (1e-3, 0.0), (1.0, 0.1)])
def test_momo_adam_first_step_is_the_preconditioned_polyak_step(lr, wd):
    w, opt = build("momo_adam", lr=lr, weight_decay=wd)
    (w1,) = steps(w, opt, 1)
    g, loss = grad(W0), f(W0)
    m, v = 0.1 * g, 0.001 * g * g
    precond = torch.sqrt(v / 0.001) + 1e-8
    c = 1 + lr * wd
    t = max(0.0, c * 0.1 * loss + m @ W0 - c * 0.1 * (W0 @ g)) / (m @ (m / precond))
    tau = min(lr / 0.1, float(t))
    close(w1, (W0 - tau * m / precond) / c)


@pytest.mark.parametrize(("lr", "wd"), [(10.0, 0.0), (0.01, 0.0), (10.0, 0.5)])
def test_prox_sps_step_is_the_capped_proximal_polyak_step(lr, wd):
    w, opt = build("prox_sps", lr=lr, weight_decay=wd)
    (w1,) = steps(w, opt, 1)
    g, loss = grad(W0), f(W0)
    t = max(0.0, (1 + lr * wd) * loss - lr * wd * (g @ W0)) / (g @ g)
    close(w1, (W0 - min(lr, float(t)) * g) / (1 + lr * wd))
    assert float(opt.step_size) == pytest.approx(float(t), rel=1e-10)


def test_adabelief_first_rectified_step_is_sgd_with_decoupled_decay():
    # rectify=True: at step 1 the SMA length is 1 < 5, so the step degenerates to SGD on the
    # bias-corrected momentum m / (1 - beta1) = g, after the decoupled decay w *= 1 - lr wd.
    w, opt = build("adabelief", lr=0.01, weight_decay=0.1)
    (w1,) = steps(w, opt, 1)
    close(w1, W0 * (1 - 0.01 * 0.1) - 0.01 * grad(W0))


def test_adabelief_unrectified_step_divides_by_the_belief():
    w, opt = build("adabelief", lr=0.01, rectify=False)
    w1, w2 = steps(w, opt, 2)
    eps = 1e-16
    g0 = grad(W0)
    m, s = 0.1 * g0, 0.001 * (g0 - 0.1 * g0) ** 2 + eps
    close(w1, W0 - 0.01 / 0.1 * m / (torch.sqrt(s / 0.001) + eps))
    g1 = grad(w1)
    m = 0.9 * m + 0.1 * g1
    s = 0.999 * s + 0.001 * (g1 - m) ** 2 + eps
    bc1, bc2 = 1 - 0.9**2, 1 - 0.999**2
    close(w2, w1 - 0.01 / bc1 * m / (torch.sqrt(s / bc2) + eps))


@pytest.mark.parametrize("lr", [1e-2, 1e-9])  # 1e-9: the lower bound clips every element
def test_adabound_first_step_is_adam_clipped_into_the_bounds(lr):
    w, opt = build("adabound", lr=lr, weight_decay=0.01)
    (w1,) = steps(w, opt, 1)
    g = grad(W0) + 0.01 * W0
    m, v = 0.1 * g, 0.001 * g * g
    eta = lr * math.sqrt(0.001) / 0.1 / (torch.sqrt(v) + 1e-8)
    final = 0.1  # final_lr * lr / base_lr with a constant lr
    eta = eta.clamp(final * (1 - 1 / (1e-3 + 1)), final * (1 + 1 / 1e-3))
    close(w1, W0 - eta * m)
    if lr == 1e-9:
        assert torch.all(eta == final * (1 - 1 / (1e-3 + 1)))


def test_lion_steps_by_the_sign_of_the_interpolated_momentum():
    w, opt = build("lion", lr=0.01, weight_decay=0.5)
    w1, w2 = steps(w, opt, 2)
    g0 = grad(W0)
    close(w1, W0 * (1 - 0.01 * 0.5) - 0.01 * torch.sign(0.1 * g0))
    m = 0.01 * g0  # beta2 = 0.99 average after step 1
    close(w2, w1 * (1 - 0.01 * 0.5) - 0.01 * torch.sign(0.9 * m + 0.1 * grad(w1)))


@pytest.mark.parametrize("name", ["momo", "momo_adam", "prox_sps", "adabound", "adabelief",
                                  "lion", "sgd_m"])
def test_state_dict_round_trips_through_a_weights_only_checkpoint(name):
    """Resume: 3 steps, save, restore into a fresh optimizer, 2 more steps == 5 steps straight."""
    w, opt = build(name, lr=0.01)
    straight = steps(w, opt, 5)[-1]
    w, opt = build(name, lr=0.01)
    steps(w, opt, 3)
    buffer = io.BytesIO()
    torch.save({"w": w.detach(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    w2, opt2 = build(name, lr=0.01)
    with torch.no_grad():
        w2.copy_(saved["w"])
    opt2.load_state_dict(saved["opt"])
    assert torch.equal(steps(w2, opt2, 2)[-1], straight)


def test_loss_step_optimizers_refuse_a_step_without_the_loss():
    w = torch.nn.Parameter(W0.clone())
    opt = Momo([w])
    f(w).backward()
    with pytest.raises(TypeError, match="loss="):
        opt.step()


def test_a_zero_gradient_gives_no_nan():
    w = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = Momo([w], lr=1.0)
    loss = (w * w).sum() + 1.0  # gradient 0 at w = 0
    loss.backward()
    opt.step(loss=loss.detach())
    assert torch.equal(w.detach(), torch.zeros(4, dtype=torch.float64))


def test_bad_hyperparameters_are_one_line_errors():
    with pytest.raises(ValueError, match=r"beta=1\.5"):
        Momo([torch.nn.Parameter(W0.clone())], beta=1.5)
