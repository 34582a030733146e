"""The regimes-of-SGD study: data, networks, alpha-scaled losses, step-based SGD, observables,
checkpoints, sweeps and the phase diagram."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from src.models.mean_field import (
    ACTIVATIONS,
    ScaledConv,
    mean_field_mlp,
    mnas_cnn,
    perceptron,
)
from src.regimes.data import cifar_animal, depleted_sign, mnist_parity, teacher_student
from src.regimes.losses import margin_loss, margin_loss_slope, mean_loss
from src.regimes.observables import alignment, jacobian, ntk_stats, weight_norms
from src.tasks.regimes import loss_ladder, sde_gradient, step_size
from tests.helpers.datafiles import write_cifar10, write_mnist_tree
from tests.helpers.runs import compose_train

# ---------------------------------------------------------------- data


@pytest.mark.parametrize("chi", [0.0, 1.0, 3.0])
def test_depleted_sign_first_coordinate_follows_theory(chi):
    x, y = depleted_sign(200_000, 4, chi, seed=0)
    x1 = x[:, 0]
    # density ~ |x1|^chi exp(-x1^2/2): E[x1^2] = chi + 1, E[x1^4] = (chi + 1)(chi + 3)
    assert float((x1**2).mean()) == pytest.approx(chi + 1, rel=0.02)
    assert float((x1**4).mean()) == pytest.approx((chi + 1) * (chi + 3), rel=0.05)
    assert float((y > 0).double().mean()) == pytest.approx(0.5, abs=0.005)
    assert torch.equal(y, torch.sign(x1))
    assert float(x[:, 1:].var()) == pytest.approx(1.0, rel=0.01)
    # depletion: with chi > 0 fewer points lie near the decision boundary x1 = 0
    near = float((x1.abs() < 0.1).double().mean())
    assert near == pytest.approx(0.0797, rel=0.05) if chi == 0 else near < 0.01


def test_teacher_student_train_and_test_have_their_own_seeds():
    a = teacher_student(50, 30, seed_train=0, seed_test=1, d=8)
    b = teacher_student(50, 30, seed_train=0, seed_test=2, d=8)
    c = teacher_student(50, 30, seed_train=5, seed_test=1, d=8)
    assert torch.equal(a.train_x, b.train_x) and not torch.equal(a.test_x, b.test_x)
    assert torch.equal(a.test_x, c.test_x) and not torch.equal(a.train_x, c.train_x)
    assert a.train_x.shape == (50, 8) and a.test_y.shape == (30,)


def test_mnist_parity_reads_idx_files_and_labels_parity(tmp_path):
    arrays = write_mnist_tree(tmp_path, "MNIST")
    data = mnist_parity(ptr=5, pte=3, seed_train=0, seed_test=0, root=str(tmp_path))
    images = np.concatenate([arrays["train_x"], arrays["test_x"]]).astype(np.float64)
    digits = np.concatenate([arrays["train_y"], arrays["test_y"]])
    standardised = (images - 33.31) / 78.57
    for x, y in zip([*data.train_x, *data.test_x], [*data.train_y, *data.test_y], strict=True):
        i = int(np.argmin(np.abs(standardised - x[0].numpy()).sum(axis=(1, 2))))
        assert np.allclose(standardised[i], x[0].numpy())
        assert float(y) == (1.0 if digits[i] % 2 == 0 else -1.0)
    seen = {tuple(x.flatten()[:8].tolist()) for x in [*data.train_x, *data.test_x]}
    assert len(seen) == 8  # train and test are disjoint
    with pytest.raises(ValueError, match="ptr=8 \\+ pte=3 exceeds its 9 points"):
        mnist_parity(ptr=8, pte=3, seed_train=0, seed_test=0, root=str(tmp_path))


def test_cifar_animal_labels_vehicles_minus_one(tmp_path):
    written = write_cifar10(tmp_path, per_batch=4)  # 24 images, labels cycle through 0..9
    data = cifar_animal(ptr=20, pte=4, seed_train=0, seed_test=0, root=str(tmp_path))
    labels = [lab for batch in written.values() for lab in batch[b"labels"]]
    vehicles = sum(lab in (0, 1, 8, 9) for lab in labels)
    y = torch.cat([data.train_y, data.test_y])
    assert int((y == -1).sum()) == vehicles and int((y == 1).sum()) == 24 - vehicles
    raw = np.concatenate([b[b"data"] for b in written.values()]).astype(np.float64)
    assert float(torch.cat([data.train_x, data.test_x]).mean()) == pytest.approx(
        (raw.mean() - 120.93) / 64.14)


# ---------------------------------------------------------------- networks and losses


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_mean_field_activations_have_unit_second_moment(activation):
    net = mean_field_mlp((8,), 1, width=4, depth=1, activation=activation)
    z = torch.randn(2_000_000, dtype=torch.float64)
    assert float((net.phi(z) * net.phi_norm).pow(2).mean()) == pytest.approx(1.0, rel=0.01)


def test_mean_field_mlp_scales_and_has_no_biases():
    torch.manual_seed(0)
    net = mean_field_mlp((3, 2, 2), 1, width=32, depth=2, activation="relu").double()
    assert all(p.ndim == 2 for p in net.parameters())  # weight matrices only
    assert all(abs(float(p.detach().std()) - 1) < 0.15 for p in net.parameters())  # N(0, 1) weights
    x = torch.randn(5, 3, 2, 2, dtype=torch.float64)
    h = x.flatten(1)
    for w in net.hidden:
        h = torch.relu(h @ w.t() / math.sqrt(w.shape[1])) * math.sqrt(2)
    assert torch.allclose(net(x), h @ net.readout.t() / 32)
    p = perceptron((16,), 1)
    assert torch.allclose(p(h[:, :16].float()), h[:, :16].float() @ p.weight.t() / 4)


def test_mnas_cnn_has_the_seeds_shapes_scales_and_residuals():
    torch.manual_seed(0)
    net = mnas_cnn((3, 32, 32), 1, width=4, activation="gelu").double()
    assert all("bias" not in name for name, _ in net.named_parameters())
    weights = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert abs(float(weights.mean())) < 0.05 and float(weights.std()) == pytest.approx(1, rel=0.05)
    channels = [c.weight.shape[0] for c in net.stem] + [b.project.weight.shape[0]
                                                         for b in net.blocks]
    assert channels == [16, 16, 8, 4, 4, 12, 12] and net.head.weight.shape[0] == 80
    assert [b.residual for b in net.blocks] == [False, True, False, True]
    assert net.blocks[0].expand.weight.shape[0] == 3 * 8  # 1x1 expansion to 3x the input
    x = torch.randn(64, 3, 32, 32, dtype=torch.float64)
    sizes, h = [], x
    with torch.no_grad():
        for conv in net.stem:
            h = net.act(conv(h))
            sizes.append(h.shape[-1])
            assert float(h.pow(2).mean()) == pytest.approx(1, rel=0.3)  # O(1): explicit scaling
        for block in net.blocks:
            h = block(h)
            sizes.append(h.shape[-1])
    assert sizes == [16, 16, 16, 8, 8, 4, 4]  # "SAME" padding: ceil(size / stride)
    # TensorFlow's SAME for 32 -> 16 with k = 5: one pixel padded before, two after
    conv = ScaledConv(1, 1, 5, 2)
    image = torch.zeros(1, 1, 32, 32)
    image[0, 0, 0, 0] = 1.0
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0  # picks input pixel (2i + 1 - 1, 2j + 1 - 1)
    with torch.no_grad():
        assert float(conv(image)[0, 0, 0, 0]) == pytest.approx(1 / 5)
    with pytest.raises(ValueError, match="needs images"):
        mnas_cnn((784,), 1)


@pytest.mark.parametrize("loss", ["hinge", "quadratic_hinge", "mse", "soft_hinge"])
@pytest.mark.parametrize("alpha", [1.0, 32768.0])
def test_initial_loss_of_a_centred_network_is_one_over_alpha(loss, alpha):
    phi = margin_loss(loss)
    y = torch.tensor([1.0, -1.0, 1.0, 1.0], dtype=torch.float64)
    value = float(mean_loss(phi, torch.zeros(4, dtype=torch.float64), y, alpha))
    assert value == pytest.approx(1 / alpha, rel=1e-8)


def test_hinge_is_zero_beyond_the_margin():
    phi = margin_loss("hinge")
    y = torch.tensor([1.0, -1.0])
    assert float(mean_loss(phi, torch.tensor([0.5, -0.5]), y, alpha=2.0)) == 0.0
    assert float(mean_loss(phi, torch.tensor([0.25, 0.0]), y, alpha=2.0)) == pytest.approx(
        (0.5 + 1.0) / 2 / 2)


def test_temperature_and_learning_rate_follow_each_other():
    assert step_size(dt=0.5, temp=None, bs=8, width=64) == (0.5, 0.5 / (8 * 64))
    assert step_size(dt=0.5, temp=1e-3, bs=8, width=64) == pytest.approx((1e-3 * 8 * 64, 1e-3))


def test_loss_ladder_is_log_dense_toward_zero():
    ladder = loss_ladder(0.5, 4, 1e-4)
    assert np.allclose(ladder, 0.5 * np.array([1e-1, 1e-2, 1e-3, 1e-4]))


# ---------------------------------------------------------------- observables


def test_ntk_gram_matrix_and_gradient_noise_match_explicit_jacobians():
    torch.manual_seed(0)
    net = mean_field_mlp((5,), 1, width=7, depth=2, activation="gelu").double()
    x = torch.randn(6, 5, dtype=torch.float64)
    y = torch.tensor([1.0, -1.0, 1.0, -1.0, -1.0, 1.0], dtype=torch.float64)
    rows = []
    for xi in x:
        grads = torch.autograd.grad(net(xi[None]).squeeze(), list(net.parameters()))
        rows.append(torch.cat([g.flatten() for g in grads]))
    explicit = torch.stack(rows)
    assert torch.allclose(jacobian(net, x), explicit)
    alpha, phi = 3.0, margin_loss("quadratic_hinge")
    pred = (net(x).squeeze(1) * 0.2).detach()
    k0 = explicit @ explicit.t() * 0.5
    stats, kernel, notes = ntk_stats(net, x, y, pred, alpha, phi, k0)
    assert notes == {}
    assert torch.allclose(kernel, explicit @ explicit.t())
    assert stats["ntk_delta"] == pytest.approx(float((kernel - k0).pow(2).mean()))
    assert stats["ntk_yKy"] == pytest.approx(float(y @ kernel @ y))
    assert stats["ntk_yKinvy"] == pytest.approx(float(y @ torch.linalg.pinv(kernel) @ y / 36))
    # per-sample loss gradients through autograd of phi(alpha y f)/alpha, with f's offset fixed
    offset = net(x).squeeze(1).detach() - pred
    per_sample = []
    for xi, yi, oi in zip(x, y, offset, strict=True):
        loss = phi(alpha * yi * (net(xi[None]).squeeze() - oi)) / alpha
        per_sample.append(torch.cat([g.flatten() for g in torch.autograd.grad(
            loss, list(net.parameters()))]))
    g = torch.stack(per_sample)
    assert stats["grad_norm"] == pytest.approx(float(g.mean(0).norm()))
    assert stats["grad_var"] == pytest.approx(float((g - g.mean(0)).pow(2).sum(1).mean()))


@pytest.mark.parametrize("bs", [2, 12])
def test_gd_sde_step_is_the_full_gradient_plus_sgd_scaled_noise(bs):
    torch.manual_seed(0)
    net = mean_field_mlp((5,), 1, width=7, depth=2, activation="gelu").double()
    x = torch.randn(12, 5, dtype=torch.float64)
    y = torch.where(torch.randn(12) > 0, 1.0, -1.0).double()
    f0 = (net(x).squeeze(1) * 0.3).detach()
    xi = torch.randn(12, dtype=torch.float64)
    alpha, phi = 2.0, margin_loss("soft_hinge")
    got = torch.cat([g.flatten() for g in sde_gradient(net, phi, alpha, bs)(x, y, f0, xi)])
    params = list(net.parameters())
    full = torch.cat([g.flatten() for g in torch.autograd.grad(
        mean_loss(phi, net(x).squeeze(1) - f0, y, alpha), params)])
    # l'_mu: the derivative of sample mu's loss phi(alpha y pred)/alpha by its output
    pred = (net(x).squeeze(1) - f0).detach().requires_grad_()
    (dloss,) = torch.autograd.grad((phi(alpha * y * pred) / alpha).sum(), pred)
    sigma = math.sqrt(float(dloss.pow(2).sum()) * (1 / bs - 1 / 12))
    expected = full + sigma * (xi[:, None] * jacobian(net, x)).mean(0)
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)
    if bs == 12:  # the batch is the whole set: no noise, gradient descent
        assert torch.allclose(got, full)


def test_alignment_with_the_teacher_of_a_known_perceptron():
    w0 = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0]])
    w = torch.tensor([[3.0, 1.0, 0.0, -1.0, 2.0]])  # w_par = 3, ||w_perp||^2 = 6, d - 1 = 4
    x = torch.tensor([[0.5, 9.0, 9, 9, 9], [-2.0, 0, 0, 0, 0], [4.0, 0, 0, 0, 0]])
    y = torch.tensor([1.0, -1.0, 1.0])
    pred = torch.tensor([0.1, -0.1, 2.0])  # alpha y pred = 0.2, 0.2, 4: the first two unfitted
    got = alignment(w, w0, x, y, pred, alpha=2.0)
    assert got["align"] == pytest.approx(9 / (6 / 4))
    assert got["dw_par2"] == pytest.approx(4.0)
    assert got["dw_perp2"] == pytest.approx((0 + 1 + 4 + 1) / 4)
    assert got["x1_unfit"] == pytest.approx((0.5 + 2.0) / 2)
    assert math.isnan(alignment(w, w0, x, y, pred * 100, alpha=2.0)["x1_unfit"])


def test_weight_norms_per_layer():
    net = mean_field_mlp((3,), 1, width=2, depth=1, activation="relu")
    w0 = {k: torch.zeros_like(v) for k, v in net.named_parameters()}
    norms = weight_norms(net, w0)
    total = sum(float(p.detach().pow(2).sum()) for p in net.parameters())
    assert norms["norm2/hidden.0"] == pytest.approx(float(net.hidden[0].detach().pow(2).sum()))
    assert norms["norm"] == pytest.approx(math.sqrt(total), rel=1e-6)
    assert norms["dnorm"] == pytest.approx(norms["norm"], rel=1e-6)


@pytest.mark.parametrize("preset", ["regimes_perceptron_chi0", "regimes_perceptron_chi1",
                                    "regimes_mnist_parity_lazy", "regimes_mnist_parity_feature"])
def test_presets_are_the_seed_sweeps(preset):
    cfg = compose_train([f"experiment={preset}"])
    params = cfg.hydra.sweeper.params if "hydra" in cfg else None
    assert cfg.task.run == "src.tasks.regimes.run" and cfg.objective == "test_err"
    if "perceptron" in preset:
        assert (cfg.dataset.source.d, cfg.dataset.ptr, cfg.task.alpha) == (128, 8192, 128)
        assert cfg.dataset.source.chi == int(preset[-1])
    else:
        assert (cfg.model.depth, cfg.model.width, cfg.model.activation) == (5, 128, "gelu")
        assert cfg.task.alpha == (32768 if preset.endswith("lazy") else 1)
    assert params is None or "batch_size" in params


@pytest.mark.parametrize("name", ["hinge", "quadratic_hinge", "soft_hinge", "mse"])
def test_each_loss_slope_is_the_derivative_autograd_takes(name):
    z = torch.cat([torch.linspace(-3, 3, 61, dtype=torch.float64),
                   torch.tensor([1.0], dtype=torch.float64)]).requires_grad_()
    (want,) = torch.autograd.grad(margin_loss(name, 7.0)(z).sum(), z)
    torch.testing.assert_close(margin_loss_slope(name, 7.0)(z.detach()), want)


@pytest.mark.parametrize(("budget", "says"), [
    (["task.max_step=6"], "stopped by its step budget (6 steps"),
    (["task.max_wall=0"], "stopped by its time budget (task.max_wall=0 s)")])
def test_a_run_stopped_by_a_budget_says_which(tmp_path, caplog, budget, says):
    import logging

    from src.tasks import regimes

    cfg = compose_train(["task=regimes", "debug=fast", "device=cpu", "epochs=1000",
                         "logger=none", *budget])
    with caplog.at_level(logging.INFO):
        regimes.run(cfg, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    reason = budget[0].split("=")[0].removeprefix("task.")
    assert summary["status"] == "completed" and summary["stop_reason"] == reason
    assert says in caplog.text and f"completed ({reason}): test_err" in caplog.text
