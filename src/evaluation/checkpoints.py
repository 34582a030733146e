"""Evaluate a run's checkpoint: the raw and every averaged model, final and best states."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.checkpoint import load_checkpoint
from src.data.bundle import build_data
from src.errors import CheckpointError, ConfigError
from src.evaluation.metrics import evaluate
from src.runner import CHECKPOINT, resolve_device
from src.trainer import RAW, load_state, metric_prefix
from src.trusted_config import check_targets

SPLIT_VIEWS = {"train": "train_eval", "val": "val", "test": "test"}


def locate(path: str | Path) -> tuple[Path, Path]:
    """(run dir, checkpoint file) from either of them; one-line errors if they are not there."""
    path = Path(path).expanduser()
    ckpt = path / CHECKPOINT if path.is_dir() else path
    if not ckpt.is_file():
        raise CheckpointError(f"no checkpoint at {ckpt}: pass checkpoint=<run dir of train.py>")
    run_dir = ckpt.parent
    if not (run_dir / ".hydra" / "config.yaml").is_file():
        raise CheckpointError(f"{run_dir} has no .hydra/config.yaml: pass a run directory written "
                              f"by train.py")
    return run_dir, ckpt


def evaluate_run(path: str | Path, splits: list[str], device: str = "auto",
                 data_dir: str | None = None, batch_size: int = 1024) -> dict[str, float]:
    """Metrics '<model/>[best/]<split>_<loss|acc>' as in summary.json, for the given splits."""
    bad = [s for s in splits if s not in SPLIT_VIEWS]
    if bad:
        raise ConfigError(f"splits={bad} are not splits: use any of train, val, test")
    run_dir, ckpt_path = locate(path)
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    check_targets(cfg, run_dir / ".hydra" / "config.yaml")
    if data_dir is not None:
        cfg.data_dir = data_dir
    state = load_checkpoint(ckpt_path)
    dev = resolve_device(device)
    data = build_data(cfg.dataset, cfg.batch_size, batch_size, dev)
    model = instantiate(cfg.model, input_shape=data.input_shape,
                        num_classes=data.num_classes).to(dev)
    weights = {RAW: state["model"]}
    if state.get("ema"):
        weights.update(state["ema"]["averages"])
    metrics: dict[str, float] = {}
    try:
        for name, final in weights.items():
            for tag, sd in (("", final), ("best/", state["best"][name]["state"])):
                load_state(model, {k: v.to(dev) for k, v in sd.items()})
                for split in splits:
                    m = evaluate(model, getattr(data, SPLIT_VIEWS[split]))
                    metrics[f"{metric_prefix(name)}{tag}{split}_loss"] = m["loss"]
                    metrics[f"{metric_prefix(name)}{tag}{split}_acc"] = m["acc"]
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {ckpt_path} does not fit its run's config "
                              f"({type(e).__name__}): was the run directory edited?") from None
    return metrics


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
