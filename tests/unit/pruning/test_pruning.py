"""Prune-and-retrain experiments: masks, methods, FLOPs, modes, resume, report, torchrun, preset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from src.core.errors import ConfigError
from src.engine.features import MaskedWeights
from src.engine.trainer import Parts, Trainer, TrainerSettings, TrainState
from src.models.resnet_cifar import resnet20
from src.pruning import methods
from src.pruning.flops import count_flops
from src.pruning.masks import Masks
from src.pruning.ratios import keep_ratios
from src.pruning.report import PruningResults, prunability, within
from src.tasks.pruning import PruningExperiment, check_pruning
from tests.helpers.pruning import DIGITS, QUIET, fake_cifar_data
from tests.helpers.runs import compose_train

METHODS = {"magnitude": methods.Magnitude(), "snip": methods.Snip(batches=1),
           "random": methods.Random(), "filter_l1": methods.FilterL1()}


@pytest.mark.parametrize("name", list(METHODS))
def test_achieved_keep_ratio_is_within_half_a_percent_of_the_target(name):
    torch.manual_seed(0)
    model = resnet20((3, 32, 32), 10)
    masks = Masks(model)
    data = fake_cifar_data(eval_batch_size=8) if name == "snip" else None  # SNIP: 1 batch
    for keep in (0.8, 0.3, 0.05):  # a cascade: each ratio prunes the previous masks further
        before = [m.clone() for m in masks.masks]
        METHODS[name](model, masks, keep, data)
        assert abs(masks.keep_ratio() - keep) <= 0.005 * keep, (keep, masks.keep_ratio())
        for old, new in zip(before, masks.masks, strict=True):
            assert torch.all(new <= old)  # nothing pruned comes back
        for weight, mask in zip(masks.weights, masks.masks, strict=True):
            assert torch.all(weight[mask == 0] == 0)
    if name == "filter_l1":  # whole filters, the same fraction of every conv layer
        for module, mask in zip(masks.modules.values(), masks.masks, strict=True):
            if isinstance(module, nn.Conv2d):
                per_filter = mask.flatten(1).sum(1)
                assert set(per_filter.unique().tolist()) <= {0.0, float(mask[0].numel())}
                assert abs(per_filter.gt(0).float().mean().item() - 0.05) < 0.1
    if name == "random":
        density = list(masks.densities().values())
        assert max(density) - min(density) < 0.01


def test_magnitude_keeps_the_largest_weights():
    model = nn.Sequential(nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, -5.0, 0.3, 2.0], [-0.2, 0.05, 4.0, -1.0]]))
    masks = Masks(model)
    methods.Magnitude()(model, masks, 0.5, None)
    assert masks.masks[0].tolist() == [[0, 1, 0, 1], [0, 0, 1, 1]]


def retrain(masks: Masks | None, model: nn.Module, data) -> None:
    cfg = compose_train(["debug=fast", *QUIET])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

    class NoLog:
        def append(self, record: dict) -> None: ...

        def append_step(self, record: dict) -> None: ...

    settings = TrainerSettings.from_config(cfg.trainer, epochs=1, batch_size=32, seed=0)
    features = [MaskedWeights(masks)] if masks is not None else []
    Trainer(Parts(model, opt, sched), data, settings, NoLog(), lambda s: None,
            features).fit(TrainState())


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def test_pruned_weights_stay_zero_through_retraining():
    data = fake_cifar_data()
    torch.manual_seed(0)
    model = small_cnn()
    masks = Masks(model)
    methods.Magnitude()(model, masks, 0.3, None)
    start, kept = [w.detach().clone() for w in masks.weights], masks.kept()
    unmasked = small_cnn()
    unmasked.load_state_dict(model.state_dict())
    retrain(masks, model, data)
    retrain(None, unmasked, data)  # the same retraining without the masks' hook
    layers = dict(unmasked.named_modules())
    for name, w0, w, mask in zip(masks.names, start, masks.weights, masks.masks, strict=True):
        assert torch.all(w[mask == 0] == 0), name
        assert not torch.equal(w[mask == 1], w0[mask == 1]), name  # the kept weights trained
        assert torch.any(layers[name].weight[mask == 0] != 0), name  # revived without the hook
    assert masks.kept() == kept


def test_flops_are_counted_by_pytorch_and_structured_pruning_lowers_them():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 4))
    masks = Masks(net)
    dense = count_flops(net, (3, 16, 16), masks)
    # conv 8 filters of 27 weights + linear 32 weights = 248; keep 4 filters: 108 + 32 = 140.
    methods.FilterL1()(net, masks, 140 / 248, None)
    pruned = count_flops(net, (3, 16, 16), masks)

    def counted(module: nn.Module, shape: tuple[int, ...]) -> int:
        with FlopCounterMode(display=False) as counter:
            module(torch.zeros(1, *shape))
        return counter.get_total_flops()

    assert dense["flops"] == counted(net, (3, 16, 16))
    # The pruned count is that of a conv layer that really has 4 filters, plus the dense linear.
    assert pruned["flops_kept"] == counted(nn.Conv2d(3, 4, 3, padding=1), (3, 16, 16)) + counted(
        nn.Linear(8, 4), (8,))
    assert pruned["flops_kept"] < dense["flops_kept"] == dense["flops"]
    model = resnet20((3, 32, 32), 10)
    resnet_masks = Masks(model)
    methods.FilterL1()(model, resnet_masks, 0.5, None)
    assert count_flops(model, (3, 32, 32), resnet_masks)["flops_kept_fraction"] < 0.55


def test_keep_ratio_spacings():
    geo = keep_ratios(OmegaConf.create({"spacing": "geometric", "start": 0.8, "stop": 0.05,
                                        "count": 15}))
    assert len(geo) == 15 and geo[0] == 0.8 and abs(geo[-1] - 0.05) < 1e-12
    assert np.allclose(np.diff(np.log(geo)), np.log(0.05 / 0.8) / 14)
    lin = keep_ratios(OmegaConf.create({"spacing": "linear", "start": 0.2, "stop": 0.8,
                                        "count": 4}))
    assert np.allclose(lin, [0.8, 0.6, 0.4, 0.2])
    assert keep_ratios(OmegaConf.create({"spacing": "list", "values": [0.1, 0.5]})) == [0.5, 0.1]
    with pytest.raises(ConfigError, match="fractions in"):
        keep_ratios(OmegaConf.create({"spacing": "list", "values": [1.5]}))


@pytest.mark.parametrize(("overrides", "message"), [
    (["pruning.mode=iterative"], "is not a mode"),
    (["pruning.mode=cascade", "pruning.ratio_index=1"], "splits only mode=retrain"),
    (["pruning.retrain_epochs=5"], "runs past the training schedule"),
    (["optimizer=sign_sgd"], "without gradient compression"),
])
def test_bad_pruning_settings_are_one_line_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_pruning(compose_train(["pruning=magnitude", *DIGITS, *overrides]))


def test_prunability_report_on_hand_made_arrays():
    # 1 net, 4 keep ratios, 2 repetitions, 2 methods; reference top-1 error 10%.
    keep = np.array([0.8, 0.4, 0.2, 0.1])
    err_a = np.array([[0.090, 0.094], [0.100, 0.104], [0.120, 0.110], [0.300, 0.300]])
    err_b = np.array([[0.140, 0.140], [0.160, 0.160], [0.200, 0.200], [0.400, 0.400]])
    err = np.stack([err_a, err_b], axis=-1)[None]  # [1, 4, 2, 2]
    keeps = np.broadcast_to(keep[None, :, None, None], err.shape).copy()
    results = PruningResults(
        nets=["n0"], methods=["a", "b"], keep_targets=keep.tolist(), repetitions=2,
        cells={"test_top1_err": err, "keep": keeps, "flops_kept_fraction": keeps * 0.9,
               "params_kept": keeps * 1000,
               "speedup": np.stack([1.0 / keeps[..., 0], np.full(keeps.shape[:-1], np.nan)],
                                   axis=-1)},  # measured for a (structured), not for b
        reference={"test_top1_err": np.array([0.10]), "params_prunable": np.array([1000.0])})
    deltas = (-1.0, -0.5, 0.0, 0.5, 2.0, 5.0)
    rows = {(r["method"], r["delta"]): r for r in prunability(results, deltas)}
    # Method a, mean errors per ratio: 9.2%, 10.2%, 11.5%, 30%.
    assert rows[("a", -1.0)]["prune_ratio"] is None  # 9.2 > 10 - 1, and the reference's 10 too
    assert rows[("a", -0.5)]["prune_ratio"] == pytest.approx(0.2)  # 9.2 <= 9.5
    assert rows[("a", -0.5)]["top1_err"] == pytest.approx(0.092)
    assert rows[("a", 0.0)]["prune_ratio"] == pytest.approx(0.2)  # 10.2 > 10
    assert rows[("a", 0.5)]["prune_ratio"] == pytest.approx(0.6)  # 10.2 <= 10.5
    assert rows[("a", 0.5)]["params_kept"] == pytest.approx(400)
    assert rows[("a", 0.5)]["flops_kept_fraction"] == pytest.approx(0.36)
    assert rows[("a", 0.5)]["speedup"] == pytest.approx(2.5)  # 1 / keep 0.4
    assert rows[("a", 2.0)]["prune_ratio"] == pytest.approx(0.8)  # 11.5 <= 12
    # Method b is worse than the reference everywhere: only the unpruned net (ratio 0) qualifies
    # for delta >= 0, nothing for delta < 0; 14% <= 10 + 5 gives 0.2.
    assert rows[("b", -1.0)]["prune_ratio"] is None
    assert rows[("b", 0.0)]["prune_ratio"] == 0.0 and rows[("b", 0.0)]["top1_err"] == 0.10
    assert rows[("b", 0.0)]["speedup"] is None and rows[("b", 5.0)]["speedup"] is None
    assert rows[("b", 5.0)]["prune_ratio"] == pytest.approx(0.2)
    # The largest qualifying ratio wins even past a ratio that fails (not the first failure).
    assert within(0.1, np.array([0.2, 0.5, 0.7]), np.array([0.09, 0.2, 0.1]), 0.0) == 2


def test_modes_prune_from_the_reference_the_previous_cell_or_rewound_weights(tmp_path,
                                                                             monkeypatch):
    base = ["pruning=magnitude", *DIGITS, "epochs=2", "pruning.retrain_epochs=1"]
    ref_dir = None
    starts = {}
    for mode in ("retrain", "cascade", "cascade_rewind"):
        cfg = compose_train([*base, f"pruning.mode={mode}"])
        exp = PruningExperiment(cfg, tmp_path / mode)  # the first one trains the reference
        ref_dir = exp.ref_dir
        monkeypatch.setattr(Trainer, "fit", lambda self, state: state)  # cells: no retraining
        first = exp.run_cell(0, 0, None)
        starts[mode] = (first, exp.run_cell(0, 1, first))
    ref = torch.load(ref_dir / "checkpoint.pt", weights_only=True)["model"]
    early = torch.load(ref_dir / "checkpoint_epoch1.pt", weights_only=True)["model"]
    assert not torch.equal(ref["1.weight"], early["1.weight"])  # Sequential(Flatten, Linear, ..)
    for mode, source in (("retrain", ref), ("cascade", ref), ("cascade_rewind", early)):
        second = starts[mode][1]
        for name, mask in second["masks"].items():
            key = f"{name}.weight"
            assert torch.equal(second["model"][key], source[key] * mask), (mode, key)
    for mode in ("cascade", "cascade_rewind"):  # masks of a cascade are nested
        first, second = starts[mode]
        for name, mask in second["masks"].items():
            assert torch.all(mask <= first["masks"][name])


def test_retraining_restarts_the_training_schedule_at_the_chosen_epoch():
    from src.optim.schedulers import cosine, multistep
    from src.tasks.pruning import restart_schedule

    first = []
    for build in (lambda o: multistep(o, 3, 4, milestones=[2], reference_epochs=4, gamma=0.1),
                  lambda o: cosine(o, 3, 4)):
        stepped = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
        restarted = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
        a, b = build(stepped), build(restarted)
        for _ in range(6):  # two epochs of three steps
            stepped.step()
            a.step()
        restart_schedule(b, 6)
        first.append(restarted.param_groups[0]["lr"])
        for _ in range(6):  # the retraining's steps see the same learning rates
            assert restarted.param_groups[0]["lr"] == pytest.approx(stepped.param_groups[0]["lr"])
            for opt, sched in ((stepped, a), (restarted, b)):
                opt.step()
                sched.step()
    # Epoch 2 of 4: after the multistep milestone (x0.1), halfway down the cosine (x0.5).
    assert first == pytest.approx([0.01, 0.05])


def test_collector_merges_cells_of_split_jobs_and_refuses_duplicates(tmp_path):
    from src.pruning.report import collect

    def write(run: str, net: str, method: str, mode: str, rep: int, keep: float,
              err: float) -> None:
        folder = tmp_path / run / "cells"
        folder.mkdir(parents=True, exist_ok=True)
        ref = {"reference_digest": net, "test_top1_err": 0.1, "test_top5_err": 0.01,
               "test_loss": 0.3, "params_prunable": 100, "flops": 1000.0}
        (tmp_path / run / "reference.json").write_text(json.dumps(ref))
        cell = {"reference_digest": net, "method": method, "mode": mode, "repetition": rep,
                "keep_target": keep, "status": "completed", "test_top1_err": err,
                "test_top5_err": err / 2, "test_loss": 1.0, "keep": keep,
                "flops_kept_fraction": keep, "params_kept": 100 * keep}
        (folder / f"rep{rep}_{keep}.json").write_text(json.dumps(cell))

    # Two nets (seeds), two methods, jobs split by repetition and by ratio.
    write("a", "net0", "magnitude", "retrain", 0, 0.5, 0.11)
    write("b", "net0", "magnitude", "retrain", 1, 0.5, 0.13)
    write("c", "net0", "magnitude", "retrain", 0, 0.2, 0.20)
    write("d", "net1", "random", "cascade", 0, 0.5, 0.30)
    results = collect(sorted(tmp_path.iterdir()))
    assert results.nets == ["net0", "net1"] and results.methods == ["magnitude", "random/cascade"]
    assert results.keep_targets == [0.5, 0.2] and results.repetitions == 2
    err = results.cells["test_top1_err"]
    assert err.shape == (2, 2, 2, 2)
    assert err[0, 0, 0, 0] == 0.11 and err[0, 0, 1, 0] == 0.13 and err[0, 1, 0, 0] == 0.20
    assert err[1, 0, 0, 1] == 0.30 and np.isnan(err).sum() == 16 - 4
    assert results.mean("test_top1_err")[0, 0] == pytest.approx(0.12)
    write("e", "net0", "magnitude", "retrain", 1, 0.5, 0.13)  # job b's cell once more
    with pytest.raises(ConfigError, match="is in two runs"):
        collect(sorted(tmp_path.iterdir()))


def test_a_reference_no_better_than_chance_is_said_and_the_run_directory_comes_last(
        tmp_path, caplog, monkeypatch):
    import logging

    from src.tasks.pruning import run_pruning

    measured = PruningExperiment.reference_record

    def at_chance(self):  # a reference trained too briefly: 95% top-1 error on 10 classes
        return {**measured(self), "test_top1_err": 0.95}

    monkeypatch.setattr(PruningExperiment, "reference_record", at_chance)
    with caplog.at_level(logging.INFO):
        run_pruning(compose_train(["pruning=magnitude", *DIGITS, "pruning.keep_ratios.count=2"]),
                    tmp_path / "run")
    assert "no better than chance: test top-1 error 95.0% against 90.0% for a guess" in \
        caplog.text
    assert caplog.records[-1].getMessage() == f"run directory: {tmp_path / 'run'}"
