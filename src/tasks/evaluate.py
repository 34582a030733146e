"""Evaluate a run's checkpoint: the raw and every averaged model, final and best states."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from src.core.build import build
from src.core.errors import CheckpointError, ConfigError
from src.core.files import CHECKPOINT, CONFIG
from src.core.keys import RAW, SPLITS
from src.core.trusted_config import check_targets
from src.data.bundle import build_data
from src.engine.distributed import resolve_device
from src.engine.evaluation import final_and_best
from src.lifecycle.checkpoint import load_checkpoint
from src.lifecycle.identity import config_digest


def locate(path: str | Path) -> tuple[Path, Path]:
    """(run dir, checkpoint file) from either of them; one-line errors if they are not there."""
    path = Path(path).expanduser()
    ckpt = path / CHECKPOINT if path.is_dir() else path
    if not ckpt.is_file():
        raise CheckpointError(f"no checkpoint at {ckpt}: pass checkpoint=<run dir of train.py>")
    run_dir = ckpt.parent
    if not (run_dir / CONFIG).is_file():
        raise CheckpointError(f"{run_dir} has no {CONFIG}: pass a run directory written "
                              f"by train.py")
    return run_dir, ckpt


def evaluate_run(path: str | Path, splits: list[str], device: str = "auto",
                 data_dir: str | None = None, batch_size: int = 1024) -> dict[str, float]:
    """Metrics '<model/>[best/]<split>_<loss|acc>' as in summary.json, for the given splits."""
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise ConfigError(f"splits={bad} are not splits: use any of {', '.join(SPLITS)}")
    run_dir, ckpt_path = locate(path)
    cfg = OmegaConf.load(run_dir / CONFIG)
    check_targets(cfg, run_dir / CONFIG)
    state = load_checkpoint(ckpt_path)
    digest = config_digest(cfg)
    if state.get("config_digest") != digest:
        raise CheckpointError(
            f"checkpoint {ckpt_path} was trained with another config than {run_dir / CONFIG} "
            f"(digest {state.get('config_digest')}, the run's {digest}): evaluate the run it "
            f"came from, or restore this run's own checkpoint")
    if data_dir is not None:
        cfg.data_dir = data_dir
    dev = resolve_device(device)
    data = build_data(cfg.dataset, cfg.batch_size, batch_size, dev)
    model = build(cfg.model, input_shape=data.input_shape, num_classes=data.num_classes).to(dev)
    try:
        final = {RAW: state["model"], **(state["ema"]["averages"] if state.get("ema") else {})}
        states = {name: ({k: v.to(dev) for k, v in sd.items()},
                         {k: v.to(dev) for k, v in state["best"][name]["state"].items()})
                  for name, sd in final.items()}
        return final_and_best(model, states, data, splits)
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {ckpt_path} does not fit the model of "
                              f"{run_dir / CONFIG} ({type(e).__name__}): the config or the "
                              f"checkpoint was replaced; restore the run's own files, or "
                              f"retrain it with train.py") from None


def table(metrics: dict[str, float], splits: list[str]) -> str:
    """A plain-text table: one row per model and state, loss and accuracy (%) per split."""
    suffix = f"{splits[0]}_acc"
    rows = [k[: -len(suffix)] for k in metrics if k.endswith(suffix)]  # '', 'best/', 'ema_0.9/'..
    header = f"{'model':<24}" + "".join(f"{s + ' loss':>12}{s + ' acc %':>12}" for s in splits)
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = "".join(f"{metrics[f'{row}{s}_loss']:>12.4f}{100 * metrics[f'{row}{s}_acc']:>12.2f}"
                        for s in splits)
        lines.append(f"{row.rstrip('/') or 'model':<24}{cells}")
    return "\n".join(lines)
