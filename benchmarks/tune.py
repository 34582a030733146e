"""tune.py's pruners and asynchronous trials, each a whole `tune.py` search (start-up, trials,
evaluation) on the same search space with the same sampler seed:

  pruners   --trials trials of the digits MLP, --epochs epochs each, learning rate and weight
            decay on log scales, without a pruner, with `median` and with `hyperband`: the epochs
            trained (every trial's epochs_completed) and the best objective (val_acc, points)
  lanes     the median-pruned search with two trials in flight: Hydra's joblib launcher (2
            workers) in batches (asynchronous=false) and asynchronous, and the workers launcher
            (hydra/launcher=workers) asynchronous: the share of worker time spent idle,
            1 - sum(trial durations) / (2 x the search's span), trial durations from each run's
            summary (started_at to finished_at), the span from the first start to the last end;
            and the median gap between one worker process's consecutive trials (its end to
            its next start: the launch of a job, plus, in batches, the wait for the slowest)

    .venv/bin/python benchmarks/tune.py                     # CPU, about 5 minutes
    .venv/bin/python benchmarks/tune.py --trials 8 --epochs 4 --out /tmp/tune.json  # smoke
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

from harness import machine

QUIET = ["trainer.progress=false", "logger=none"]
SPACE = ["hydra.sweeper.params=null", "optimizer.lr=tag(log, interval(1e-4, 1.0))",
         "optimizer.weight_decay=tag(log, interval(1e-6, 1e-2))"]


def search(folder: Path, args: argparse.Namespace, *extra: str) -> dict:
    """One tune.py search into `folder`; its wall time, epochs trained, best and trials."""
    cmd = [sys.executable, "tune.py", f"epochs={args.epochs}", f"device={args.device}", *QUIET,
           *SPACE, f"hydra.sweeper.n_trials={args.trials}", "hydra.sweeper.sampler.seed=0",
           f"hydra.sweep.dir={folder}", *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    summaries = [json.loads(p.read_text()) for p in folder.glob("*/summary.json")]
    done = [s for s in summaries if s["status"] == "completed"]
    spans = sorted((s["started_at"], s["finished_at"]) for s in summaries)
    by_worker: dict[int, list[tuple[float, float]]] = {}
    for s in summaries:
        by_worker.setdefault(s["pid"], []).append((s["started_at"], s["finished_at"]))
    gaps = [b[0] - a[1] for runs in by_worker.values()
            for a, b in itertools.pairwise(sorted(runs))]
    return {"wall_s": wall, "trials": len(summaries),
            "pruned": sum(s["status"] == "pruned" for s in summaries),
            "epochs_trained": sum(s["epochs_completed"] for s in summaries),
            "best_val_acc": 100 * max(s["objective"] for s in done),
            "busy_s": sum(end - start for start, end in spans),
            "span_s": max(end for _, end in spans) - spans[0][0],
            "median_gap_s": statistics.median(gaps) if gaps else None}


def pruners(args: argparse.Namespace, tmp: Path) -> dict:
    out = {name: search(tmp / name, args, f"hydra/sweeper/pruner={name}")
           for name in ("none", "median", "hyperband")}
    for name in ("median", "hyperband"):
        out[name]["epochs_vs_none"] = out[name]["epochs_trained"] / out["none"]["epochs_trained"]
        out[name]["best_minus_none_points"] = (out[name]["best_val_acc"]
                                               - out["none"]["best_val_acc"])
    return out


LANES = {  # two trials in flight: Hydra's joblib launcher in batches and asynchronous, and the
    # workers launcher (processes that stay up, configs composed in the sweeper) asynchronous
    "joblib_batches": ["hydra/launcher=joblib", "hydra.sweeper.asynchronous=false"],
    "joblib_asynchronous": ["hydra/launcher=joblib", "hydra.sweeper.asynchronous=true"],
    "workers_asynchronous": ["hydra/launcher=workers", "hydra.sweeper.asynchronous=true"],
}


def lanes(args: argparse.Namespace, tmp: Path) -> dict:
    out = {}
    for name, extra in LANES.items():
        r = search(tmp / f"lanes-{name}", args, "hydra/sweeper/pruner=median",
                   "hydra.launcher.n_jobs=2", *extra)
        r["waiting_share"] = 1 - r["busy_s"] / (2 * r["span_s"])
        out[name] = r
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = {"machine": machine(), "trials": args.trials, "epochs": args.epochs,
                  "pruners": pruners(args, Path(tmp)), "lanes": lanes(args, Path(tmp))}
    print(json.dumps(report, indent=2), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
