"""Aggregate throughput of several small trainings sharing one device (Hydra's joblib launcher).

Runs the same K trainings (K seeds) one after another with Hydra's basic launcher and K at a
time with the joblib launcher, in `--rounds` alternating pairs (benchmarks/harness.py), and
reports training samples per second of wall time for both and their ratio: the median over
pairs with its min-max (measured in one run, on one device).

    .venv/bin/python benchmarks/parallel_runs.py                         # 4 x ResNet-20, fake data
    .venv/bin/python benchmarks/parallel_runs.py --jobs 4 --model resnet20 --images 50000   # GPU
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import interleave, machine, rates, ratio  # noqa: E402

BATCH = 128


def sweep(launcher: list[str], args: list[str], out: Path) -> tuple[float, int]:
    """Wall seconds of one multirun (start-up included) and the training samples it processed."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "train.py", "-m", *args, *launcher,
                    f"hydra.sweep.dir={out}"], cwd=ROOT, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    summaries = [json.loads(p.read_text()) for p in out.glob("*/summary.json")]
    return wall, sum(s["step"] * s["workers"] * BATCH for s in summaries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=3, help="alternating pairs")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args()
    seeds = ",".join(str(i) for i in range(args.jobs))
    common = [f"model={args.model}", "dataset=fake",
              f"dataset.source.num_train={args.images + 256}",
              "dataset.source.num_test=256", "dataset.val_size=256", f"epochs={args.epochs}",
              f"batch_size={BATCH}", "averaging=none", f"device={args.device}", f"seed={seeds}",
              "trainer.progress=false", "logger=none"]
    launchers = {"serial": [],
                 "parallel": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}"]}
    with tempfile.TemporaryDirectory() as tmp:
        made = itertools.count()

        def cost(launcher: list[str]) -> float:  # wall seconds per training sample
            wall, samples = sweep(launcher, common, Path(tmp) / str(next(made)))
            return wall / samples

        costs = interleave({k: (lambda v=v: cost(v)) for k, v in launchers.items()},
                           args.rounds, warmup=False)
    result = {"machine": machine(), "runs": args.jobs, "model": args.model,
              "images_per_epoch": args.images, "rounds": args.rounds,
              **rates(costs, "samples_per_wall_s"),
              "parallel_vs_serial": ratio(costs["serial"], costs["parallel"])}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
