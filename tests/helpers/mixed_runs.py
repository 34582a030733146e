"""A folder of mixed runs, made by train.py itself, as a researcher's outputs/runs looks after a
while: two optimizers x two learning rates x two seeds (recording per-sample correctness), a
diverged run, a failed run, a compressed run with two workers, an Adam run, a one-epoch run, a
tune.py trial with another batch size, a small regimes sweep (stacked runs: three stacks of
three), pruning experiments (magnitude, PFP) and an optimizer record smoke run on fake data.

The figure tests draw every figure kind from it; `python -m tests.helpers.mixed_runs docs/figures`
builds it in a temporary folder and draws the committed README figures from it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUIET = ["trainer.progress=false", "logger=none"]
SWEEPS = {
    "optimizers": ["debug=fast", "epochs=6", "dataset.train_limit=null", "optimizer=sgd,momentum",
                   "optimizer.lr=0.03,0.3", "seed=0,1", "trainer.track_samples=true"],
    "diverged_and_failed": ["debug=fast", "epochs=6", "optimizer=sgd",
                            "optimizer.lr=1e6,-1"],
    "compressed": ["debug=fast", "epochs=3", "optimizer=compressed_sgd_vote", "num_bits=2",
                   "workers=2", "trainer.log_every=1"],
    "adam": ["debug=fast", "epochs=2", "optimizer=adam", "optimizer.lr=0.001"],
    "one_epoch": ["debug=fast", "epochs=1"],
    "regimes": ["task=regimes", "debug=fast", "epochs=200", "task.max_wall=20",
                "batch_size=4,16,64", "task.dt=0.1,1,10", "hydra/launcher=stacked"],
    "pruning": ["pruning=magnitude,pfp", "debug=fast", "epochs=3",
                "pruning.retrain_epochs=1", "pruning.keep_ratios.count=3",
                "pruning.speed.pairs=3"],
    "record": ["experiment=record_mnist_mlp", "lr_grid=momo", "optimizer.lr=0.3,1", "seed=0,1",
               "debug=fast", "epochs=3", "dataset=fake"],
}

TRIAL = ["debug=fast", "epochs=4", "batch_size=64", "hydra.sweeper.n_trials=1",
         "hydra.sweeper.sampler.seed=0"]


def build(folder: Path) -> Path:
    """Train every sweep into `folder` (one run directory each); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, args in SWEEPS.items():
        proc = subprocess.run([sys.executable, "train.py", "-m", *args, *QUIET,
                               f"hydra.sweep.dir={folder}"], cwd=ROOT, text=True,
                              capture_output=True, timeout=900)
        expected = 1 if name == "diverged_and_failed" else 0  # lr=-1 fails, on purpose
        if proc.returncode != expected:
            raise RuntimeError(f"sweep {name} exited {proc.returncode}:\n{proc.stdout[-3000:]}"
                               f"\n{proc.stderr[-3000:]}")
    # one tune.py trial, with another batch size, copied in as a researcher's folder holds it
    study = folder.parent / "study"
    proc = subprocess.run([sys.executable, "tune.py", *TRIAL, *QUIET,
                           f"hydra.sweep.dir={study}"], cwd=ROOT, text=True,
                          capture_output=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"tune.py exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    (trial,) = [p for p in study.iterdir() if (p / "summary.json").exists()]
    shutil.copytree(trial, folder / f"tune-{trial.name}")
    return folder


def draw_all(folder: Path, out_dir: Path) -> None:
    """Every figure kind from `folder` into `out_dir`, as plots.py draws them."""
    kinds = [["figure=curves"], ["figure=curves", "metric=ema_0.99/val_acc"],
             ["figure=lr_stability"], ["figure=ema"], ["figure=bin_usage"],
             ["figure=phase_diagram"], ["figure=pruning"], ["figure=pruning_methods"],
             ["figure=records"],
             ["figure=best_curves", "top=2"], ["figure=sample_flips"],
             ["figure=sample_disagreement"], ["figure=sample_error_rates"],
             ["figure=sample_barcode"]]
    for args in kinds:
        subprocess.run([sys.executable, "plots.py", f"runs={folder}", *args,
                        f"out_dir={out_dir}"], cwd=ROOT, check=True)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/figures").resolve()
    with tempfile.TemporaryDirectory() as tmp:
        runs = build(Path(tmp) / "runs")
        drawn = Path(tmp) / "drawn"
        draw_all(runs, drawn)
        target.mkdir(parents=True, exist_ok=True)
        # a record's own figures sit in a subfolder; of the barcodes (one per run), the first
        pngs = sorted(drawn.rglob("*.png"))
        barcodes = [p for p in pngs if p.name.startswith("sample_barcode_")]
        pngs = [p for p in pngs if p not in barcodes[1:]]
        for png in pngs:
            name = "sample_barcode.png" if png in barcodes else "_".join(
                png.relative_to(drawn).parts)
            shutil.copy(png, target / name)
        print(f"copied {len(pngs)} figures to {target}")
