"""The regimes-of-SGD study: data, networks, alpha-scaled losses, step-based SGD, observables,
checkpoints, sweeps and the phase diagram."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from src.analysis.runs import find_runs
from src.core.files import read_jsonl
from src.models.mean_field import (
    ACTIVATIONS,
    ScaledConv,
    mean_field_mlp,
    mnas_cnn,
    perceptron,
)
from src.regimes.data import cifar_animal, depleted_sign, mnist_parity, teacher_student
from src.regimes.losses import margin_loss, mean_loss
from src.regimes.observables import alignment, jacobian, ntk_stats, weight_norms
from src.tasks.regimes import loss_ladder, sde_gradient, step_size
from tests.helpers.datafiles import write_cifar10, write_mnist_tree
from tests.helpers.runs import ROOT, compose_train, run_script, summary, train

# A perceptron on 256 teacher-student points in d = 16: fits in a few hundred steps.
SMALL = ["task=regimes", "device=cpu", "trainer.tensorboard=false", "dataset.source.d=16",
         "dataset.ptr=256", "dataset.pte=256", "task.alpha=4"]


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


def test_mnas_trains_on_cifar_animal_with_the_centred_output(tmp_path):
    write_cifar10(tmp_path / "data", per_batch=4)  # 24 images
    run_dir = tmp_path / "run"
    train(run_dir, "task=regimes", "dataset=cifar_animal", "model=mnas", "model.width=2",
          f"data_dir={tmp_path / 'data'}", "dataset.ptr=16", "dataset.pte=8", "batch_size=4",
          "task.temp=0.5", "task.max_step=12", "task.eval_every=4", "task.ckpt_step_points=3",
          "task.ckpt_grad_stats=4", "device=cpu", "trainer.tensorboard=false")
    s = summary(run_dir)
    history = read_jsonl(run_dir / "history.jsonl")
    assert s["status"] == "completed" and s["width"] == 2 and s["dt"] == pytest.approx(0.5 * 4 * 2)
    assert history[0]["train_aloss"] == pytest.approx(1.0)  # centred: pred = 0 at the start
    assert history[-1]["dnorm"] > 0 and history[-1]["ntk_norm"] > 0


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
    stats, kernel = ntk_stats(net, x, y, pred, alpha, phi, k0)
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


def test_gd_sde_runs_resumable_and_leaves_older_sgd_digests_alone(tmp_path):
    from src.lifecycle.identity import config_digest

    cfg = compose_train(SMALL)
    older = OmegaConf.create(OmegaConf.to_container(cfg))
    del older.task["dynamics"]  # a config from before task.dynamics existed
    assert config_digest(cfg) == config_digest(older)
    assert config_digest(compose_train([*SMALL, "task.dynamics=gd_sde"])) != config_digest(cfg)
    run_dir = tmp_path / "sde"
    args = [*SMALL, "task.dynamics=gd_sde", "batch_size=16", "task.dt=1", "task.max_step=200"]
    train(run_dir, *args)
    s = summary(run_dir)
    assert s["status"] == "completed" and s["dynamics"] == "gd_sde"
    assert s["temp"] == pytest.approx(1 / 16)
    history = read_jsonl(run_dir / "history.jsonl")
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    # the noise is drawn from the run's seed: the same command gives the same run
    train(tmp_path / "again", *args)
    assert summary(tmp_path / "again")["metrics"] == s["metrics"]
    other = run_script("train.py", [*SMALL, "task.dynamics=langevin",
                                    f"hydra.run.dir={tmp_path / 'bad'}"])
    assert other.returncode == 2 and "task.dynamics=langevin" in other.stderr
    assert "sgd, gd_sde" in other.stderr


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


# ---------------------------------------------------------------- runs


def test_perceptron_fits_separable_data_to_zero_training_error(tmp_path):
    run_dir = tmp_path / "run"
    train(run_dir, *SMALL, "batch_size=16", "task.dt=1", "task.ckpt_grad_stats=32")
    s = summary(run_dir)
    assert s["status"] == "completed" and s["stop_reason"] in ("zero_loss", "margin")
    assert s["metrics"]["train_err"] == 0 and s["metrics"]["train_nd"] == 0
    assert s["metrics"]["train_margin"] >= 1
    history = read_jsonl(run_dir / "history.jsonl")
    assert history[0]["step"] == 0 and history[0]["train_aloss"] == pytest.approx(1.0)
    # a perceptron's tangent kernel x.x'/d does not depend on w: it never moves
    assert max(abs(r["ntk_delta"]) for r in history) < 1e-10 and history[-1]["ntk_norm"] > 0
    losses = [r["train_loss"] for r in history]
    assert len(history) >= 5 and losses == sorted(losses, reverse=True)
    assert s["dt"] == 1 and s["temp"] == pytest.approx(1 / 16)
    # alignment with the teacher e_1: none has moved at the start, and every point is unfitted
    first, last = history[0], history[-1]
    assert first["dw_par2"] == 0 and first["dw_perp2"] == 0
    ds = compose_train(SMALL).dataset
    points = teacher_student(256, 256, ds.seed_train, ds.seed_test, d=16)
    assert first["x1_unfit"] == pytest.approx(float(points.train_x[:, 0].abs().mean()))
    assert last["align"] > first["align"] and last["dw_par2"] > 0
    assert last["x1_unfit"] is None  # all fitted: no unfitted point to average over


def test_temperature_sets_the_learning_rate_of_the_mlp(tmp_path):
    run_dir = tmp_path / "run"
    train(run_dir, *SMALL, "model=mf_mlp", "model.width=16", "model.depth=2", "batch_size=8",
          "task.temp=0.05", "task.max_step=20", "task.ckpt_grad_stats=16", "task.alpha=1")
    s = summary(run_dir)
    assert s["dt"] == pytest.approx(0.05 * 8 * 16) and s["width"] == 16
    assert s["stop_reason"] == "max_step" and s["step"] == 20
    history = read_jsonl(run_dir / "history.jsonl")
    assert history[-1]["ntk_delta"] > 0  # feature learning: the MLP's kernel moves


def test_wall_time_budget_stops_a_run_that_keeps_its_data(tmp_path):
    run_dir = tmp_path / "run"
    train(run_dir, *SMALL, "task.alpha=1000", "batch_size=1", "task.dt=1e-4",
          "task.max_wall=1", "task.eval_every=50", "task.ckpt_step_points=40")
    s = summary(run_dir)
    assert s["status"] == "completed" and s["stop_reason"] == "max_wall"
    (run,) = find_runs(str(run_dir))
    assert len(run.history) >= 2 and run.history[-1]["step"] == s["step"] > 0
    assert run.config["task.max_wall"] == 1 and run.config["choice.task"] == "regimes"


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path):
    args = [*SMALL, "task.alpha=1000", "batch_size=1", "task.dt=1e-3", "task.max_step=30000",
            "task.eval_every=500", "task.save_every_s=0", "task.ckpt_step_points=10"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    train(whole, *args)
    cmd = [sys.executable, "train.py", *args, f"hydra.run.dir={killed}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (
            killed / "checkpoint.pt").exists():
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)  # mid-run: no chance to clean up
    assert proc.wait() == -signal.SIGKILL and not (killed / "summary.json").exists()
    assert len(read_jsonl(killed / "history.jsonl")) >= 1  # saved data survives the kill
    train(killed, *args)
    a, b = summary(whole), summary(killed)
    assert a["metrics"] == b["metrics"] and a["step"] == b["step"] == 30000
    strip = ("wall_s",)
    assert [{k: v for k, v in r.items() if k not in strip} for r in read_jsonl(
        whole / "history.jsonl")] == [{k: v for k, v in r.items() if k not in strip}
                                       for r in read_jsonl(killed / "history.jsonl")]


def test_sweep_skips_finished_runs_and_draws_the_phase_diagram(tmp_path):
    sweep = ["-m", *SMALL, "batch_size=8,32", "task.dt=0.1,1", "task.max_step=50",
             f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    first = run_script("train.py", sweep)
    assert first.returncode == 0, first.stderr[-2000:]
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "sweep").rglob("summary.json")}
    assert len(stamps) == 4
    again = run_script("train.py", sweep)
    assert again.returncode == 0 and "already completed" in again.stdout + again.stderr
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
    out = tmp_path / "plots"
    proc = run_script("plots.py", [f"runs={tmp_path / 'sweep'}", "figure=phase_diagram",
                                   f"out_dir={out}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    kinds, files = ("phase_diagram", "phase_norm"), ("png", "pdf", "json")
    assert {p.name for p in out.iterdir()} == {f"{k}.{e}" for k in kinds for e in files}


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


def test_presets_run_with_debug_fast(tmp_path):
    write_mnist_tree(tmp_path / "data", "MNIST")
    for preset in ("regimes_perceptron_chi1", "regimes_mnist_parity_lazy"):
        run_dir = tmp_path / preset
        extra = ["dataset.ptr=6", "dataset.pte=3", "batch_size=2"] if "mnist" in preset else []
        train(run_dir, f"experiment={preset}", "debug=fast", "device=cpu",
              f"data_dir={tmp_path / 'data'}", *extra)
        s = summary(run_dir)
        assert s["status"] == "completed" and 0 <= s["objective"] <= 1
    assert summary(tmp_path / "regimes_perceptron_chi1")["ptr"] == 256  # debug=fast's limit


def test_wrong_dataset_for_a_task_is_one_line(tmp_path):
    proc = train(tmp_path / "a", "task=regimes", "dataset=digits", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: dataset=digits is not a binary")
    proc = train(tmp_path / "b", "dataset=teacher_student", check=False)
    assert proc.returncode == 2 and "add task=regimes" in proc.stderr
    proc = train(tmp_path / "c", *SMALL, "batch_size=512", check=False)
    assert proc.returncode == 2 and "batch_size=512 exceeds the 256 training points" in proc.stderr
    assert not any((tmp_path / d).exists() for d in "abc")

