"""What each experiment tracker costs a run: logger=none, tensorboard, csv, mlflow, wandb.

Two costs, measured in rounds whose order rotates (harness.interleave), each round with a fresh
MLflow store that a warm-up run has created (its tables are made once per store, ever):
- a sweep of `--runs` tiny runs (digits MLP, `--epochs` short epochs, a record every 2 steps) in
  one process: wall seconds per run, the tracker's import paid once per sweep;
- a single train.py run: the wall seconds of the whole process, import and tracker start
  included (what one run costs from the command line).
Each is reported as the median over the rounds and as a ratio to logger=none in the same rounds
(median, smallest and largest; < 1: slower than no tracker).

    .venv/bin/python benchmarks/trackers.py                       # 8 runs a sweep, 3 rounds
    .venv/bin/python benchmarks/trackers.py --runs 4 --rounds 2 --out /tmp/trackers.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import interleave, machine, ratio  # noqa: E402

LOGGERS = ("none", "tensorboard", "csv", "mlflow", "wandb")
TINY = ["debug=fast", "model=mlp", "model.width=16", "averaging=none", "device=cpu",
        "trainer.progress=false"]


def train(args: list[str], cwd: Path, multirun: bool = False) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *(["-m"] if multirun else []),
                           *TINY, *args], cwd=cwd, text=True, capture_output=True)
    if proc.returncode != 0:
        sys.exit(f"trackers: train.py {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="runs in each sweep")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work, count = Path(tmp), iter(range(1_000_000))
        train(["logger=mlflow", "seed=-1"], work)  # the store's tables, made once

        def sweep(logger: str) -> float:
            first = next(count) * args.runs  # new runs each time: none is reused
            seeds = ",".join(str(first + i) for i in range(args.runs))
            wall = train([f"logger={logger}", f"epochs={args.epochs}", f"seed={seeds}",
                          f"hydra.sweep.dir={work}/sweeps"], work, multirun=True)
            return wall / args.runs

        def single(logger: str) -> float:
            return train([f"logger={logger}", f"epochs={args.epochs}",
                          f"seed={next(count) + 10**6}", f"hydra.run.dir={work}/single/{logger}"
                          f"-{next(count)}"], work)

        sweeps = interleave({name: (lambda n=name: sweep(n)) for name in LOGGERS},
                            rounds=args.rounds, warmup=False)
        singles = interleave({name: (lambda n=name: single(n)) for name in LOGGERS},
                             rounds=args.rounds, warmup=False)
    rows = []
    for name in LOGGERS:
        row = {"logger": name, "sweep_s_per_run": statistics.median(sweeps[name]),
               "single_run_s": statistics.median(singles[name]),
               "sweep_vs_none": ratio(sweeps["none"], sweeps[name]),
               "single_vs_none": ratio(singles["none"], singles[name])}
        rows.append(row)
        print(f"{name:12s} sweep {row['sweep_s_per_run']:.2f} s/run "
              f"(x{row['sweep_vs_none']['ratio']:.2f} of none, "
              f"{row['sweep_vs_none']['ratio_min']:.2f}-{row['sweep_vs_none']['ratio_max']:.2f})"
              f" | single run {row['single_run_s']:.2f} s "
              f"(x{row['single_vs_none']['ratio']:.2f}, "
              f"{row['single_vs_none']['ratio_min']:.2f}-{row['single_vs_none']['ratio_max']:.2f})",
              flush=True)
    result = {"machine": machine(), "runs": args.runs, "epochs": args.epochs,
              "rounds": args.rounds, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
