"""Cost of the optimizer records' optimizers and of the records' history fields, as ratios.

1. Time of one optimizer step on a model's parameters (fixed random gradients), relative to the
   records' sgd_m (torch.optim.SGD), for every optimizer the records use; median of repeats.
2. The records' end-of-epoch history fields (model_norm, grad_norm: Trainer.norms) relative to one
   training epoch of the record's batch size (forward, backward and sgd_m step per batch, times
   the steps of an epoch of `--epoch-samples`).

    .venv/bin/python benchmarks/optimizers.py                             # resnet20, CPU or GPU
    .venv/bin/python benchmarks/optimizers.py --model resnet110 --steps 20 --out opt.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from src.cli.entry import register_resolvers  # noqa: E402

OPTIMIZERS = ("sgd_m", "adam", "momo", "momo_adam", "prox_sps", "adabelief", "adabound", "lion")


def config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, steps: int, repeats: int) -> float:
    """Median over `repeats` of the mean seconds per call over `steps` calls (after a warm-up)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        sync(device)
        times.append((time.perf_counter() - t0) / steps)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epoch-samples", type=int, default=50_000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    register_resolvers()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = instantiate(config([f"model={args.model}"]).model, input_shape=(3, 32, 32),
                        num_classes=10).to(device)
    params = list(model.parameters())
    grads = [torch.randn_like(p) * 1e-3 for p in params]
    loss = torch.tensor(2.3, device=device)

    steppers = {}
    for name in OPTIMIZERS:
        opt = instantiate(config([f"optimizer={name}", "optimizer.weight_decay=0"]).optimizer)(
            params)
        kwargs = {"loss": loss} if getattr(opt, "needs_loss", False) else {}

        def step(opt=opt, kwargs=kwargs) -> None:
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            opt.step(**kwargs)

        steppers[name] = step
    # Repeats interleave the optimizers, so a busy machine slows them all alike.
    runs: dict[str, list[float]] = {name: [] for name in OPTIMIZERS}
    for _ in range(args.repeats):
        for name, step in steppers.items():
            runs[name].append(timed(step, device, args.steps, 1))
    step_s = {name: statistics.median(t) for name, t in runs.items()}

    # One training step (forward, backward, sgd_m step) at the record's batch, and Trainer.norms.
    x = torch.randn(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    opt = instantiate(config(["optimizer=sgd_m"]).optimizer)(params)

    def train_step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    train_step_s = timed(train_step, device, max(1, args.steps // 5), args.repeats)

    def norms() -> list[float]:  # Trainer.norms: the end-of-epoch model_norm and grad_norm
        model_norm = torch.stack(torch._foreach_norm(params)).norm()
        grad_norm = torch.stack(torch._foreach_norm([p.grad for p in params])).norm()
        return torch.stack([model_norm, grad_norm]).tolist()

    norms_s = timed(norms, device, args.steps, args.repeats)
    epoch_s = train_step_s * (args.epoch_samples // args.batch)
    result = {
        "model": args.model, "params": sum(p.numel() for p in params), "device": str(device),
        "torch": torch.__version__,
        "step_ms": {k: 1e3 * v for k, v in step_s.items()},
        "step_ratio_vs_sgd_m": {k: v / step_s["sgd_m"] for k, v in step_s.items()},
        "train_step_ms": 1e3 * train_step_s, "norms_ms": 1e3 * norms_s,
        "norms_share_of_epoch": norms_s / epoch_s,
    }
    print(f"{args.model} ({result['params']:,} parameters) on {device}")
    print("optimizer   step ms   vs sgd_m")
    for k in OPTIMIZERS:
        print(f"{k:<10} {result['step_ms'][k]:8.2f}   {result['step_ratio_vs_sgd_m'][k]:6.2f}x")
    print(f"epoch-end norms: {result['norms_ms']:.2f} ms = {result['norms_share_of_epoch']:.2e} "
          f"of an epoch ({args.epoch_samples // args.batch} steps of {result['train_step_ms']:.1f}"
          f" ms)")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
