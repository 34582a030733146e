"""Aggregate throughput of several small trainings sharing one device (Hydra's joblib launcher).

Runs the same K trainings (K seeds) twice, one after another with Hydra's basic launcher and
K at a time with the joblib launcher, and reports training samples per second of wall time for
both, and their ratio (measured in one run, on one device).

    .venv/bin/python benchmarks/parallel_runs.py                         # 4 x ResNet-20, fake data
    .venv/bin/python benchmarks/parallel_runs.py --jobs 4 --model resnet20 --images 50000   # GPU
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
    args = parser.parse_args()
    seeds = ",".join(str(i) for i in range(args.jobs))
    common = [f"model={args.model}", "dataset=fake",
              f"dataset.source.num_train={args.images + 256}",
              "dataset.source.num_test=256", "dataset.val_size=256", f"epochs={args.epochs}",
              f"batch_size={BATCH}", "averaging=none", f"device={args.device}", f"seed={seeds}",
              "trainer.progress=false", "trainer.tensorboard=false"]
    with tempfile.TemporaryDirectory() as tmp:
        serial = sweep([], common, Path(tmp) / "serial")
        parallel = sweep(["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}"],
                         common, Path(tmp) / "parallel")
    result = {"runs": args.jobs, "model": args.model, "images_per_epoch": args.images,
              "serial_samples_per_wall_s": serial[1] / serial[0],
              "parallel_samples_per_wall_s": parallel[1] / parallel[0],
              "parallel_vs_serial": (parallel[1] / parallel[0]) / (serial[1] / serial[0])}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
