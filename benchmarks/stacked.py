"""Stacked runs against one process per run: the same sweep run by Hydra's basic launcher (one run
after another), the joblib launcher (`--workers` at a time) and hydra/launcher=stacked, each a
whole `train.py -m` (start-up, evaluation and checkpoints included), in rounds whose order
rotates (benchmarks/harness.py). The figure is training samples per second of wall time; the
ratio is stacked against the faster of basic and joblib in the same round (median, min-max).

Setups (--setups, any of them):
  perceptron  the regimes perceptron (d 128, P 8192, B 16), --runs dt values, a fixed budget of
              --steps steps each
  zero_loss   the same grid run to zero training loss (lengths spread over dt) in --slots
              places: the slots' occupancy while jobs wait, from the launcher's stacks.jsonl
  records     the mnist_mlp record grid (7 lrs x 3 seeds, sgd_m) on MNIST-shaped fake data
  resnet20    --runs ResNet-20 seeds on CIFAR-shaped fake data (the GPU kit's)

    .venv/bin/python benchmarks/stacked.py                                   # CPU, ~10 minutes
    .venv/bin/python benchmarks/stacked.py --setups perceptron --steps 20000 --rounds 3
    .venv/bin/python benchmarks/stacked.py --device cuda --setups resnet20 perceptron --runs 256
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import interleave, machine  # noqa: E402

QUIET = ["trainer.progress=false", "logger=none"]


def dts(runs: int, low: float = 0.05, high: float = 5.0) -> str:
    """`runs` log-spaced step sizes as a sweep value."""
    return ",".join(f"{low * (high / low) ** (i / max(runs - 1, 1)):.4g}" for i in range(runs))


def perceptron(ptr: int, values: str) -> list[str]:
    return ["task=regimes", "dataset.source.d=128", f"dataset.ptr={ptr}", "dataset.pte=2048",
            "batch_size=16", f"task.dt={values}"]


def setup(name: str, args: argparse.Namespace) -> tuple[list[str], int]:
    """(train.py -m arguments, samples per optimizer step) of a setup."""
    device = f"device={args.device}"
    if name == "perceptron":
        return [*perceptron(args.ptr, dts(args.runs)), f"task.max_step={args.steps}", device,
                *QUIET], 16
    if name == "zero_loss":  # about 15k (dt 5) to 300k (dt 0.2) steps on 1024 points
        return [*perceptron(args.zero_ptr, dts(args.runs, 0.2, 5.0)), "task.max_wall=null",
                device, *QUIET], 16
    if name == "records":
        return ["experiment=record_mnist_mlp", "dataset=fake", "dataset.source.shape=[1,28,28]",
                f"dataset.source.num_train={args.images}", "dataset.source.num_test=1000",
                "dataset.augment.crop_padding=0", "dataset.augment.flip=false",
                f"epochs={args.epochs}", device, *QUIET], 128
    if name == "resnet20":
        return ["model=resnet20", "dataset=fake", f"dataset.source.num_train={args.images + 512}",
                "dataset.source.num_test=512", "dataset.val_size=512", f"epochs={args.epochs}",
                "batch_size=128", "averaging=none", f"seed={','.join(map(str, range(args.runs)))}",
                device, *QUIET], 128
    raise SystemExit(f"--setups {name}: use perceptron, zero_loss, records or resnet20")


def sweep(common: list[str], launcher: list[str], out: Path, batch: int) -> tuple[float, int]:
    """Wall seconds of one `train.py -m` and the training samples its runs processed."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "train.py", "-m", *common, *launcher,
                           f"hydra.sweep.dir={out}"], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"train.py -m {' '.join(launcher)} failed:\n{proc.stderr[-3000:]}")
    steps = sum(json.loads(p.read_text())["step"] for p in out.glob("*/summary.json"))
    return wall, steps * batch


def compare(name: str, args: argparse.Namespace, tmp: Path) -> dict:
    common, batch = setup(name, args)
    launchers = {"basic": [],
                 "joblib": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.workers}"],
                 "stacked": ["hydra/launcher=stacked", f"hydra.launcher.slots={args.slots}"]}
    made = itertools.count()
    seen: dict[str, list[float]] = {k: [] for k in launchers}

    def cost(launcher: str) -> float:  # wall seconds per training sample
        out = tmp / f"{name}-{launcher}-{next(made)}"
        wall, samples = sweep(common, launchers[launcher], out, batch)
        seen[launcher].append(samples)
        if launcher == "stacked":
            stacks = [json.loads(x) for x in (out / "stacks.jsonl").read_text().splitlines()]
            step_kinds.update(s["step"] for s in stacks)
        return wall / samples

    step_kinds: set[str] = set()
    costs = interleave({k: (lambda k=k: cost(k)) for k in launchers}, args.rounds, warmup=False)
    ratios = [min(b, j) / s for b, j, s in
              zip(costs["basic"], costs["joblib"], costs["stacked"], strict=True)]
    return {"setup": name, "arguments": common, "rounds": args.rounds,
            "samples_per_sweep": statistics.median(seen["stacked"]),
            **{f"{k}_samples_per_s": 1 / statistics.median(c) for k, c in costs.items()},
            "stacked_step": sorted(step_kinds),
            "stacked_vs_best": {"ratio": statistics.median(ratios), "ratio_min": min(ratios),
                                "ratio_max": max(ratios)},
            "stacked_vs_basic": statistics.median(
                b / s for b, s in zip(costs["basic"], costs["stacked"], strict=True))}


def occupancy(args: argparse.Namespace, tmp: Path) -> dict:
    """The zero_loss grid, stacked in --slots places: how full the places stayed."""
    common, _ = setup("zero_loss", args)
    out = tmp / "zero_loss"
    wall, _ = sweep(common, ["hydra/launcher=stacked", f"hydra.launcher.slots={args.slots}"],
                    out, 16)
    (stack,) = [json.loads(x) for x in (out / "stacks.jsonl").read_text().splitlines()]
    steps = sorted(json.loads(p.read_text())["step"] for p in out.glob("*/summary.json"))
    return {"setup": "zero_loss", "arguments": common, "slots": stack["slots"],
            "runs": stack["jobs"], "wall_s": wall, "steps_min": steps[0], "steps_max": steps[-1],
            "occupancy": stack["occupancy"],
            "occupancy_while_jobs_waited": stack["occupancy_while_queued"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", nargs="+", default=["perceptron", "zero_loss", "records"])
    parser.add_argument("--runs", type=int, default=24, help="dt values, or ResNet-20 seeds")
    parser.add_argument("--steps", type=int, default=20000, help="perceptron: steps per run")
    parser.add_argument("--ptr", type=int, default=8192, help="perceptron: training points")
    parser.add_argument("--zero-ptr", type=int, default=1024, help="zero_loss: training points")
    parser.add_argument("--images", type=int, default=6000, help="records, resnet20: images")
    parser.add_argument("--epochs", type=int, default=2, help="records, resnet20")
    parser.add_argument("--slots", default="auto", help="stacked places (zero_loss: 8)")
    parser.add_argument("--workers", type=int, default=2, help="joblib's processes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.setups:
            if name == "zero_loss":
                slots = args.slots
                args.slots = 8 if slots == "auto" else slots
                results.append(occupancy(args, Path(tmp)))
                args.slots = slots
            else:
                results.append(compare(name, args, Path(tmp)))
            print(json.dumps(results[-1], indent=2), flush=True)
    report = {"machine": machine(), "workers": args.workers, "results": results}
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
