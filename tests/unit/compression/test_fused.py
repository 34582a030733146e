"""The fused exchange step (src/compression/fused.py) against the eager one it replaces: bit for
bit, random draws included, over the settings it fuses; in a real run that is killed and resumed
on the other path; and what it refuses, in one line."""

from __future__ import annotations

import logging

import pytest
import torch

import src.compression.fused as fused
import src.tasks.classify
from src.compression.compressors import QSGD, MinMax, Sign
from src.compression.exchange import GradientExchange
from tests.helpers.exchange import exchange, steps
from tests.helpers.runs import compose_train, die_after_first_checkpoint, summary

# Every fused branch: 1 and b bits, lin and exp, decay, rand_zero on and off, vote and mean,
# random and zero ties, one worker, worker momentum; n not a multiple of 8.
CASES = {
    "minmax1-vote-w4": (lambda: MinMax(1), 4, 1003, {}),
    "sign-tie-zero-w3": (lambda: Sign(), 3, 1001, {"tie": "zero"}),
    "sign-no-rand-zero-mean": (lambda: Sign(rand_zero=False), 2, 1000, {"aggregate": "mean"}),
    "minmax2-decay-vote-w3": (lambda: MinMax(2, decay=0.9), 3, 1007, {}),
    "minmax3-exp-mean-w4": (lambda: MinMax(3, binning="exp", decay=0.95, rand_zero=False), 4,
                            999, {"aggregate": "mean"}),
    "minmax2-w1": (lambda: MinMax(2, rand_zero=False), 1, 1001, {}),
    "minmax2-momentum": (lambda: MinMax(2), 3, 1001, {"worker_momentum": 0.9}),
}


# The claim holds where the compiled loops and the eager kernels use the same vector width:
# inductor compiles for the width ATEN_CPU_CAPABILITY selects for ATen (none for "default"), and
# src/core/compile.py keeps a cache per width. CI runs this file under its CPU's width and under
# ATEN_CPU_CAPABILITY=avx2.
WIDTH_BITS = {"DEFAULT": 0, "AVX2": 256, "AVX512": 512}


def test_the_compiled_loops_use_the_eager_kernels_vector_width():
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in WIDTH_BITS:
        pytest.skip(f"no x86 vector width for ATen's {capability} kernels")
    assert pick_vec_isa().bit_width() == WIDTH_BITS[capability]


@pytest.mark.parametrize("case", list(CASES))
def test_the_fused_step_equals_the_eager_one_bit_for_bit(case):
    make, workers, n, kwargs = CASES[case]
    eager_ex, eager_params = exchange(make(), "false", workers, n, **kwargs)
    fused_ex, fused_params = exchange(make(), "true", workers, n, **kwargs)
    assert eager_ex.fused is None and fused_ex.fused is not None
    eager, fused_out = steps(eager_ex, eager_params, 3), steps(fused_ex, fused_params, 3)
    assert len(eager) == len(fused_out)
    for a, b in zip(eager, fused_out, strict=True):
        assert torch.equal(a, b)
    assert eager_ex.level_counts.sum() > 0


@pytest.mark.slow
def test_a_process_compiles_more_variants_than_torch_compiles_default_limit():
    # A joblib worker runs many sweep jobs: the ninth shape must still be compiled (the default
    # recompile limit of 8 would fall back to eager silently; here that would raise instead).
    for n in range(24, 24 + 2 * 9, 2):
        ex, params = exchange(Sign(), "true", 2, n, tie="zero")
        ex.grads.copy_(torch.randn(2, n))
        ex.reduce()
        votes = torch.sign(torch.sign(ex.grads).sum(dim=0))
        assert torch.equal(torch.cat([p.grad.reshape(-1) for p in params]), votes)


def test_auto_fuses_runs_with_enough_work_where_a_compiler_is_found(monkeypatch):
    def fuses(compressor: object, workers: int = 2, steps: int = 1, **kwargs: object) -> bool:
        params = [torch.nn.Parameter(torch.zeros(100))]
        ex = GradientExchange(compressor, fused="auto", **kwargs)
        ex.setup(params, workers, list(range(workers)), steps=steps)
        return ex.fused is not None

    assert not fuses(MinMax(1), steps=1000)  # 2e5 element-steps: the compile costs more
    assert fuses(MinMax(1), steps=-(-fused.AUTO_MIN_WORK // 200))  # 2 workers x 100 elements
    monkeypatch.setattr(fused, "AUTO_MIN_WORK", 400)
    assert fuses(MinMax(1), steps=2) and not fuses(MinMax(1), steps=1)
    assert not fuses(MinMax(1), workers=1, steps=2)
    assert not fuses(QSGD(2), steps=2, aggregate="mean")
    assert not fuses(MinMax(1), steps=2, error_feedback=True)
    assert not fuses(MinMax(4), steps=2)  # 16 levels + 0 to count
    assert fuses(MinMax(4), steps=2, count_levels=False)
    monkeypatch.setattr(fused.shutil, "which", lambda name: None)
    assert not fuses(MinMax(1), steps=2)


@pytest.mark.parametrize(("make", "kwargs", "says"), [
    (lambda: QSGD(2), {"aggregate": "mean"}, "QSGD is not fused"),
    (lambda: MinMax(1), {"error_feedback": True}, "error feedback"),
    (lambda: MinMax(5), {}, r"counting 33 levels is not fused \(16 at most"),
])
def test_fused_true_refuses_what_it_cannot_fuse(make, kwargs, says):
    with pytest.raises(ValueError, match=f"compression.fused=true, but {says}"):
        exchange(make(), "true", 2, 100, **kwargs)


def test_fused_true_refuses_without_a_compiler_and_under_torchrun(monkeypatch):
    params = [torch.nn.Parameter(torch.zeros(10))]
    with pytest.raises(ValueError, match="DDP hook"):
        GradientExchange(Sign(), fused="true").setup(params, 2, [0], simulated=False)
    monkeypatch.setattr(fused, "AUTO_MIN_WORK", 0)
    ddp = GradientExchange(Sign(), fused="auto")
    ddp.setup(params, 2, [0], simulated=False)
    assert ddp.fused is None  # auto: the hook's eager encode
    monkeypatch.setattr(fused.shutil, "which", lambda name: None)
    with pytest.raises(ValueError, match=r"no C\+\+ compiler"):
        GradientExchange(Sign(), fused="true").setup(params, 2, [0, 1])
    with pytest.raises(ValueError, match=r"compression\.fused=sometimes is not a setting"):
        GradientExchange(Sign(), fused="sometimes")


def test_a_run_killed_on_the_fused_path_resumes_on_the_eager_one_to_the_same_result(
        tmp_path, monkeypatch, caplog):
    args = ["debug=fast", "epochs=3", "device=cpu", "optimizer=compressed_sgd_vote",
            "workers=3", "num_bits=2", "compression.compressor.decay=0.8",
            "trainer.progress=false", "logger=none"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    src.tasks.classify.run(compose_train([*args, "compression.fused=false"]), whole)
    die_after_first_checkpoint(monkeypatch)  # killed right after epoch 1's checkpoint
    with (pytest.raises(KeyboardInterrupt),
          caplog.at_level(logging.INFO, logger="src.tasks.classify")):
        src.tasks.classify.run(compose_train([*args, "compression.fused=true"]), cut)
    assert "gradient exchange: the fused, compiled step" in caplog.text
    # compression.fused changes no result, so it is not part of the run's identity: the run
    # resumes under the other setting (a machine without a compiler, say).
    src.tasks.classify.run(compose_train([*args, "compression.fused=false"]), cut)
    assert summary(whole)["compression"]["fused_step"] is False
    assert summary(cut)["metrics"] == summary(whole)["metrics"]
    assert (cut / "history.jsonl").read_text().count("\n") == 3
    a = torch.load(whole / "checkpoint.pt", weights_only=True)
    b = torch.load(cut / "checkpoint.pt", weights_only=True)
    for key, value in a["exchange"]["state"].items():
        assert torch.equal(value, b["exchange"]["state"][key])
    assert torch.equal(a["exchange"]["level_counts"], b["exchange"]["level_counts"])
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key])
