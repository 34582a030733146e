"""Two run directories that should hold the same run: their histories, summaries and final
weights, equal within a tolerance or bit for bit."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from src.core.files import CHECKPOINT, read_history, read_json

TIMING = ("wall_s", "epoch_s", "samples_per_s", "train_epoch_time", "final_eval_s",
          "full_train_eval_s", "total_s", "train_wall_s", "started_at", "finished_at")


def close(a: object, b: object, rtol: float, atol: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return abs(a - b) <= atol + rtol * abs(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, rtol, atol) for x, y in
                                        zip(a, b, strict=True))
    return a == b


def assert_same_run(got: Path, want: Path, rtol: float = 0.0, atol: float = 0.0,
                    weights_rtol: float | None = None) -> None:
    """History, summary metrics and status, and the checkpoint's model of `got` equal those of
    `want`: within rtol/atol, or exactly when both are 0 (timings aside); the weights within
    weights_rtol where given (a chaotic network's weights drift further than its metrics).

    Numbers compare one by one (|a - b| <= atol + rtol |b|); weights tensor by tensor
    (||a - b|| <= rtol ||b||): an element whose gradient is ~0 takes Adam steps of a direction
    that rounding decides, so one weight alone may differ by far more than its size."""
    a, b = read_history(got), read_history(want)
    assert len(a) == len(b), (got, len(a), len(b))
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        bad = {k: (ra[k], rb[k]) for k in ra
               if k not in TIMING and not close(ra[k], rb[k], rtol, atol)}
        assert not bad, (got, ra.get("epoch", ra.get("step")), bad)
    sa, sb = read_json(got / "summary.json"), read_json(want / "summary.json")
    assert sa["status"] == sb["status"] and sa["config_digest"] == sb["config_digest"]
    bad = {k: (v, sb["metrics"][k]) for k, v in sa["metrics"].items()
           if not close(v, sb["metrics"][k], rtol, atol)}
    assert not bad, (got, bad)
    ca = torch.load(got / CHECKPOINT, map_location="cpu", weights_only=True)
    cb = torch.load(want / CHECKPOINT, map_location="cpu", weights_only=True)
    for key, value in cb["model"].items():
        if rtol == atol == 0:
            assert torch.equal(ca["model"][key], value), (got, key)
        else:
            diff = (ca["model"][key].double() - value.double()).norm()
            limit = rtol if weights_rtol is None else weights_rtol
            assert diff <= limit * value.double().norm() + atol, (got, key, float(diff))
