"""Figures from run directories (PNG for screens, PDF for papers)."""

from __future__ import annotations

import glob
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from src.errors import ConfigError
from src.run_log import HISTORY, read_history


def find_runs(pattern: str) -> list[Path]:
    """Run directories (those holding history.jsonl) at, below or matching `pattern`."""
    found: set[Path] = set()
    for match in glob.glob(str(Path(pattern).expanduser())):
        path = Path(match)
        found.update(p.parent for p in (path / HISTORY, *path.rglob(HISTORY)) if p.is_file())
    if not found:
        raise ConfigError(f"runs={pattern} matches no run directory (none holds {HISTORY}): "
                          f"point runs= at a train.py output folder")
    return sorted(found)


def curves(runs: list[Path], metric: str, x: str, out_dir: Path) -> list[Path]:
    """`metric` against `x` (epoch or step), one line per run; returns the files written."""
    fig, ax = plt.subplots(figsize=(3.4, 2.6), dpi=150)  # one paper column
    plotted = 0
    for run in runs:
        rows = [r for r in read_history(run) if r.get(metric) is not None]
        if rows:
            ax.plot([r[x] for r in rows], [r[metric] for r in rows], label=run.name, lw=1.2)
            plotted += 1
    if plotted == 0:
        plt.close(fig)
        raise ConfigError(f"metric={metric} is in no run's history: use a history.jsonl key "
                          f"such as val_acc, train_loss or ema_<decay>/val_acc")
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if plotted <= 10:
        ax.legend(fontsize=5)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"curves_{metric.replace('/', '_')}_vs_{x}"
    written = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    for path in written:
        fig.savefig(path)
    plt.close(fig)
    return written
