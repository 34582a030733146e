"""Costs of the regimes study on this machine: one SGD step (eager autograd against the
torch.compile'd functional gradient, as `task.compile` picks; both warmed up, then timed over
`--steps` steps in `--pairs` alternating pairs, benchmarks/harness.py) and the NTK observable.

    .venv/bin/python benchmarks/regimes.py                      # perceptron d=128, B=16; NTK n=256
    .venv/bin/python benchmarks/regimes.py --device cuda --ntk-n 1024

A whole run to zero training loss is timed by train.py itself (summary.json's train_wall_s), e.g.
    .venv/bin/python train.py task=regimes task.alpha=128 task.temp=0.01 task.compile=true
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import alternate, machine

from src.models.mean_field import mean_field_mlp, perceptron
from src.regimes.losses import margin_loss
from src.regimes.observables import ntk_stats
from src.tasks.regimes import Batches, Progress, loss_gradient


def sgd_steps(compile: bool, d: int, ptr: int, bs: int,
              device: torch.device) -> Callable[[int], None]:
    """run(n): n SGD steps of the perceptron on `ptr` Gaussian points (warmed up)."""
    torch.manual_seed(0)
    x = torch.randn(ptr, d, device=device)
    y, f0 = torch.sign(x[:, 0]), torch.zeros(ptr, device=device)
    model = perceptron((d,), 1).to(device)
    params = list(model.parameters())
    gradient = loss_gradient(model, margin_loss("hinge"), 128.0, compile)
    batches, progress = Batches(ptr, bs, 0), Progress()

    def run(n: int) -> None:
        for _ in range(n):
            idx = batches.next(progress)
            grads = gradient(x[idx], y[idx], f0[idx])
            with torch.no_grad():
                torch._foreach_add_(params, grads, alpha=-0.1)

    run(200)  # warm-up (and compilation)
    return run


def ntk_time(n: int, width: int, depth: int, inputs: int, device: torch.device) -> float:
    """Seconds for the NTK Gram matrix and gradient noise on n points of an MLP (median of 3)."""
    torch.manual_seed(0)
    model = mean_field_mlp((inputs,), 1, width=width, depth=depth,
                           activation="gelu").to(device)
    x = torch.randn(n, inputs, device=device)
    y = torch.sign(torch.randn(n, device=device))
    pred = torch.zeros(n, device=device)
    times = []
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        ntk_stats(model, x, y, pred, 1.0, margin_loss("hinge"), None)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=4000, help="steps per timing")
    parser.add_argument("--pairs", type=int, default=5, help="alternating eager/compiled pairs")
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--ptr", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--ntk-n", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--inputs", type=int, default=784)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    eager = sgd_steps(False, args.d, args.ptr, args.batch, device)
    compiled = sgd_steps(True, args.d, args.ptr, args.batch, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    speed = alternate(lambda: eager(args.steps), lambda: compiled(args.steps), args.pairs, sync)
    ntk = ntk_time(args.ntk_n, args.width, args.depth, args.inputs, device)
    result = {"device": str(device), "machine": machine(),
              "perceptron": {"d": args.d, "ptr": args.ptr, "batch": args.batch,
                             "steps_per_timing": args.steps},
              "eager_step_us": speed["baseline_s"] / args.steps * 1e6,
              "compiled_step_us": speed["candidate_s"] / args.steps * 1e6,
              "compiled_speedup": {k: speed[k] for k in ("ratio", "ratio_min", "ratio_max",
                                                         "pairs")},
              "ntk": {"n": args.ntk_n, "width": args.width, "depth": args.depth,
                      "inputs": args.inputs, "seconds": ntk}}
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
