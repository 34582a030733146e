"""Per-job overhead of a multirun of many tiny runs, with the basic and the joblib launcher.

A multirun of N tiny trainings (digits, a small MLP, one short epoch: about 0.1 s of work each)
is timed end to end; the overhead per job is the wall time the sweep costs beyond the jobs' own
run time (their summary.json total_s), divided by N and multiplied by the number of jobs that
run at once:

    overhead per job = (wall x parallel - sum of total_s) / N

It is what a job costs in start-up, composition, run-directory bookkeeping, process hand-off and
Hydra's own per-job work. The basic launcher runs the jobs in train.py's process one after
another; the joblib launcher hands them to `--n-jobs` worker processes that stay up for the
whole sweep, so imports are paid once per worker.

    .venv/bin/python benchmarks/sweep_overhead.py                  # 100 runs, basic and joblib
    .venv/bin/python benchmarks/sweep_overhead.py --runs 20 --n-jobs 2
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import machine  # noqa: E402

TINY = ["debug=fast", "model=mlp", "model.width=16", "dataset.train_limit=64",
        "dataset.eval_limit=64", "dataset.val_size=64", "averaging=none", "device=cpu",
        "trainer.progress=false", "logger=none"]


def sweep(runs: int, launcher: list[str], out: Path) -> dict[str, float]:
    seeds = ",".join(str(i) for i in range(runs))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "train.py", "-m", *TINY, f"seed={seeds}",
                           *launcher, f"hydra.sweep.dir={out}"], cwd=ROOT, text=True,
                          capture_output=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"sweep_overhead: the sweep failed:\n{proc.stderr[-2000:]}")
    summaries = [json.loads(p.read_text()) for p in out.glob("*/summary.json")]
    if len(summaries) != runs:
        sys.exit(f"sweep_overhead: {len(summaries)} of {runs} runs finished")
    return {"wall_s": wall, "jobs_total_s": sum(s["total_s"] for s in summaries)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--n-jobs", type=int, default=2, help="joblib worker processes")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, launcher, parallel in (
                ("basic", [], 1),
                ("joblib", ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.n_jobs}"],
                 args.n_jobs)):
            r = sweep(args.runs, launcher, Path(tmp) / name)
            overhead = (r["wall_s"] * parallel - r["jobs_total_s"]) / args.runs
            rows.append({"launcher": name, "runs": args.runs, "parallel": parallel, **r,
                         "wall_per_job_s": r["wall_s"] / args.runs,
                         "overhead_per_job_s": overhead})
            print(f"{name:6s} {args.runs} runs x{parallel}: wall {r['wall_s']:.1f} s, jobs' own "
                  f"time {r['jobs_total_s']:.1f} s, overhead per job {overhead:.2f} s",
                  flush=True)
    result = {"machine": machine(), "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
