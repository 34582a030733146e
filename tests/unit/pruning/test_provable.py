"""Seed 004's own methods: SiPP and PFP sensitivities against a direct computation, their keep
ratios, ALDS's rank allocation and factorisation, exported networks against the masked ones,
and the methods through the experiment driver (resume, report, figure)."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from torch import nn

from src.core.errors import ConfigError
from src.models.resnet_cifar import resnet20
from src.pruning import lowrank
from src.pruning.export import Sliced, export, parameters
from src.pruning.masks import Masks
from src.pruning.methods import FilterL1
from src.pruning.provable import PFP, SiPP
from src.pruning.sensitivity import channel_sensitivity, weight_sensitivity
from src.tasks.pruning import PruningExperiment, run_pruning
from tests.helpers.pruning import DIGITS, cells, fake_cifar_data
from tests.helpers.runs import compose_train


def direct_sensitivity(w: torch.Tensor, points: list[list[torch.Tensor]], reduction: str
                       ) -> torch.Tensor:
    """g_ij = |w_ij| a_j / z^{sign w_ij}_i per point and position, by loops; points[n][p] is the
    (possibly negative) input patch of point n at position p, split into its two signs."""
    rows, cols = w.shape
    best = torch.zeros_like(w)
    for patches in points:
        for part in (lambda a: a.clamp(min=0), lambda a: (-a).clamp(min=0)):
            per_position = []
            for patch in patches:
                a = part(patch)
                g = torch.zeros_like(w)
                for i in range(rows):
                    for j in range(cols):
                        if w[i, j] == 0:
                            continue
                        same = [k for k in range(cols) if (w[i, k] > 0) == (w[i, j] > 0)
                                and w[i, k] != 0]
                        z = sum(abs(float(w[i, k])) * float(a[k]) for k in same)
                        g[i, j] = abs(float(w[i, j])) * float(a[j]) / z if z > 1e-7 else 0.0
                per_position.append(g)
            stack = torch.stack(per_position)
            best = torch.maximum(best, stack.amax(0) if reduction == "max" else stack.mean(0))
    return best


@pytest.mark.parametrize("reduction", ["max", "mean"])
def test_weight_sensitivities_match_a_direct_computation(reduction):
    torch.manual_seed(0)
    linear = nn.Linear(5, 3)
    x = torch.randn(4, 5)  # negative inputs too: split into two non-negative points
    got = weight_sensitivity(linear, x, reduction)
    want = direct_sensitivity(linear.weight.detach(), [[row] for row in x], reduction)
    assert torch.allclose(got, want, atol=1e-6)

    conv = nn.Conv2d(2, 3, 2, padding=1, bias=False)
    with torch.no_grad():
        conv.weight[0, 1] = 0.0  # pruned weights have no sensitivity
    x = torch.randn(2, 2, 3, 3)
    cols = nn.functional.unfold(x, 2, padding=1)  # (N, 2*2*2, positions)
    points = [[cols[n, :, p] for p in range(cols.shape[2])] for n in range(2)]
    got = weight_sensitivity(conv, x, reduction)
    want = direct_sensitivity(conv.weight.detach().reshape(3, -1), points, reduction)
    assert torch.allclose(got.reshape(3, -1), want, atol=1e-6)
    assert torch.all(got[0, 1] == 0)
    if reduction == "max":  # PFP: a channel's largest weight sensitivity over filters and taps
        per_channel = want.reshape(3, 2, 4).amax(dim=(0, 2))
        assert torch.allclose(channel_sensitivity(conv, got), per_channel, atol=1e-6)


def bn_cnn() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(16, 10))
    with torch.no_grad():  # BatchNorms as after training, so dead channels are not all zero
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
    return model


METHODS = {"sipp_rand": SiPP(samples=16), "sipp_det": SiPP(samples=16, variant="det"),
           "pfp_rand": PFP(samples=16), "pfp_det": PFP(samples=16, variant="det")}


@pytest.mark.parametrize("name", list(METHODS))
def test_sensitivity_methods_keep_the_target_ratio_and_nest_in_a_cascade(name):
    data = fake_cifar_data(eval_batch_size=8)
    torch.manual_seed(0)
    model = bn_cnn()
    masks = Masks(model)
    for keep in (0.8, 0.3, 0.1):
        before = [m.clone() for m in masks.masks]
        METHODS[name](model, masks, keep, data)
        masks.apply()
        if name.startswith("sipp"):  # single weights: the target up to rounding
            assert abs(masks.keep_ratio() - keep) <= 0.005 * keep, (keep, masks.keep_ratio())
        else:  # whole channels (the third conv's: 144 weights + a 72-weight filter = 5.6%)
            assert keep - 0.03 <= masks.keep_ratio() <= keep + 1e-9, (keep, masks.keep_ratio())
        for old, new in zip(before, masks.masks, strict=True):
            assert torch.all(new <= old)
    if name.startswith("pfp"):  # whole input channels, and the dead filters feeding them
        for mask in masks.masks:  # kept filters x kept input channels, whole kernels
            rows, cols = mask.flatten(1).any(1), mask.transpose(0, 1).flatten(1).any(1)
            block = (rows[:, None] & cols[None, :]).float()
            assert torch.equal(mask, block.view(*block.shape, *[1] * (mask.dim() - 2))
                               .expand_as(mask))
        conv1, conv2 = masks.masks[0], masks.masks[1]
        dead_inputs = conv2.transpose(0, 1).flatten(1).sum(1) == 0
        assert dead_inputs.any() and torch.all(conv1[dead_inputs] == 0)


def test_sipp_det_keeps_the_most_sensitive_weights():
    data = fake_cifar_data(eval_batch_size=8)
    torch.manual_seed(0)
    model = bn_cnn()
    masks = Masks(model)
    from src.pruning.sensitivity import layer_sensitivities

    sens, _ = layer_sensitivities(model, masks.modules, data, 16, "mean")
    SiPP(samples=16, variant="det")(model, masks, 0.2, data)
    flat = torch.cat([s.flatten() for s in sens.values()])
    kept = torch.cat([m.flatten() for m in masks.masks]).bool()
    assert flat[kept].min() >= flat[~kept].max()


def test_alds_allocation_minimises_the_worst_relative_error():
    torch.manual_seed(0)
    layers = {"a": nn.Linear(6, 5), "b": nn.Linear(5, 4), "c": nn.Conv2d(4, 3, 2)}
    budget = 50
    plan, errors = lowrank.allocate(layers, budget, 1, 0)
    errs = {n: lowrank.relative_errors(m, 1) for n, m in layers.items()}
    best = float("inf")
    for ranks in itertools.product(*[range(1, len(errs[n])) for n in layers]):
        cost, worst = 0, 0.0
        for (n, m), r in zip(layers.items(), ranks, strict=True):
            small = lowrank.factorised_params(m, r, 1)
            dense = small >= m.weight.numel()
            cost += m.weight.numel() if dense else small
            worst = max(worst, 0.0 if dense else float(errs[n][r]))
        if cost <= budget:
            best = min(best, worst)
    assert max(errors.values()) == pytest.approx(best)
    cost = sum(lowrank.factorised_params(layers[n], r, j) for n, (r, j) in plan.items()) + sum(
        m.weight.numel() for n, m in layers.items() if n not in plan)
    assert cost <= budget


@pytest.mark.parametrize("subspaces", [1, 2])
def test_factorised_layers_are_the_truncated_svd(subspaces):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    x = torch.randn(2, 4, 5, 5)
    full = lowrank.max_rank(conv, subspaces)
    assert torch.allclose(lowrank.factorise(conv, full, subspaces)(x), conv(x), atol=1e-5)
    rank = 2
    small = lowrank.factorise(conv, rank, subspaces)
    blocks = []
    w = conv.weight.detach()
    per = 4 // subspaces
    for g in range(subspaces):
        u, s, vh = torch.linalg.svd(w[:, g * per:(g + 1) * per].reshape(6, -1))
        blocks.append((u[:, :rank] * s[:rank]) @ vh[:rank])
    truncated = torch.cat([b.reshape(6, per, 3, 3) for b in blocks], dim=1)
    want = nn.functional.conv2d(x, truncated, conv.bias, padding=1)
    assert torch.allclose(small(x), want, atol=1e-5)
    assert sum(p.numel() for p in small.parameters()) - 6 == lowrank.factorised_params(
        conv, rank, subspaces)
    sigmas = torch.linalg.svdvals(w.reshape(6, -1).double())
    if subspaces == 1:
        assert float(lowrank.relative_errors(conv, 1)[rank]) == pytest.approx(
            float(sigmas[rank] / sigmas[0]), rel=1e-5)


@pytest.mark.parametrize(("method", "build"), [
    *[(m, b) for m in ("filter_l1", "pfp_rand", "pfp_det") for b in ("bn_cnn", "resnet20")],
    ("pfp_rand", "mlp"), ("pfp_det", "mlp")])  # filter_l1 prunes conv filters only
def test_exported_networks_are_smaller_and_match_the_masked_ones(method, build):
    torch.manual_seed(0)
    if build == "mlp":
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 32), nn.ReLU(),
                              nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))
    else:
        model = bn_cnn() if build == "bn_cnn" else resnet20((3, 32, 32), 10)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.normal_()
                    m.bias.normal_()
    data = fake_cifar_data(eval_batch_size=8)
    masks = Masks(model)
    {"filter_l1": FilterL1(), **METHODS}[method](model, masks, 0.3, data)
    masks.apply()
    model.eval()
    small = export(model, masks)
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        want, got = model(x), small(x)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max())), \
        float((got - want).abs().max())
    assert parameters(small) < 0.5 * parameters(model)
    if method.startswith("pfp"):  # chained filters go physically: fewer Sliced wrappers
        chained = [m for m in small.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        assert any(m.weight.shape[0] < 10 or m.weight.shape[1] < 16 for m in chained)
    if build == "bn_cnn" and method == "filter_l1":  # BatchNorm after a zero filter: constant
        assert any(isinstance(m, Sliced) for m in small.modules())


def test_alds_and_pfp_run_through_the_driver_resume_and_report(tmp_path):
    from src.analysis.figures import Options, draw
    from src.analysis.runs import find_runs

    records = {}
    for method in ("alds", "pfp"):
        args = [f"pruning={method}", *DIGITS, "pruning.keep_ratios.count=2", "epochs=2",
                "pruning.retrain_epochs=2", "pruning.speed.pairs=3"]
        if method == "pfp":
            args.append("pruning.method.samples=32")
        run_dir = tmp_path / method
        run_pruning(compose_train(args), run_dir)
        first = cells(run_dir)
        (run_dir / "cells" / "rep0_ratio01.json").unlink()  # a cell killed before its record
        run_pruning(compose_train(args), run_dir)  # resumes from the cell's checkpoint
        again = cells(run_dir)
        timing = ("retrain_wall_s", "speedup", "speedup_min", "speedup_max", "inference_ms",
                  "inference_ms_reference")
        for name in first:
            assert {k: v for k, v in first[name].items() if k not in timing} == {
                k: v for k, v in again[name].items() if k not in timing}, name
        for record in again.values():
            assert abs(record["keep"] - record["keep_target"]) < 0.02
            assert record["speedup"] > 0 and record["speedup_min"] <= record["speedup"]
            assert record["export_max_abs_diff"] <= 1e-4
            assert record["params_prunable"] == 84480  # the dense reference's
        records[method] = again
    alds = records["alds"]["rep0_ratio01"]
    assert alds["plan"] and alds["params_total"] < 0.2 * 84480  # factorised layers
    ckpt = torch.load(tmp_path / "alds" / "cells" / "rep0_ratio01" / "checkpoint.pt",
                      weights_only=True)
    assert ckpt["plan"] == alds["plan"]
    out = tmp_path / "plots"
    runs = find_runs(tmp_path)
    result = draw("pruning_methods", runs, Options(), out)
    assert (out / "pruning_methods.png").is_file()
    assert not any("alds" in n or "pfp" in n for n in result.notes)
    draw("pruning", runs, Options(), out)
    report = json.loads((out / "prunability.json").read_text())
    assert {r["method"] for r in report} == {"alds", "pfp"}
    assert all(r["speedup"] is not None for r in report if r["prune_ratio"] is not None)
    assert "x)" in (out / "prunability.md").read_text()


@pytest.mark.parametrize(("overrides", "message"), [
    (["pruning=alds", "pruning.mode=cascade"], "changes the architecture"),
    (["pruning=pfp", "pruning.method.variant=best"], "pruning.method.variant=best"),
    (["pruning=sipp", "pruning.method.samples=0"], "pruning.method.samples=0"),
    (["pruning=alds", "pruning.method.subspaces=0"], "pruning.method.subspaces=0"),
    (["pruning=pfp", "pruning.speed.pairs=0"], "pruning.speed.pairs=0"),
])
def test_bad_settings_of_the_new_methods_are_one_line_errors(tmp_path, overrides, message):
    cfg = compose_train([*overrides, *DIGITS, "epochs=1"])
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        PruningExperiment(cfg, tmp_path / "run")
