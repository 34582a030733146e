"""A run's identity: the digest of everything that determines its results, and what a rerun
finds in its directory."""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from src.core.errors import ConfigError
from src.core.files import FINISHED, read_json
from src.core.keys import flatten, neutral, worst_objective

log = logging.getLogger(__name__)

# Settings added after runs were made, with the value that reproduces those runs: at that value
# they leave the digest as it was, so older run directories still resume and are still found.
ADDED_LATER = {"task.dynamics": "sgd", "augment.label_smoothing": 0.0, "augment.mixup_alpha": 0.0,
               "augment.cutmix_alpha": 0.0, "augment.prob": 1.0, "augment.switch_prob": 0.5,
               "augment.policy": None, "augment.num_ops": 2, "augment.magnitude": 9}
# Values renamed after runs were made (the tasks moved to src/tasks/): the digest keeps the
# name those runs were made with, so they resume and their pruning references are found.
RENAMED = {"task.run": {"src.tasks.classify.run": "src.runner.run",
                        "src.tasks.regimes.run": "src.regimes.runner.run"}}


def config_digest(cfg: DictConfig) -> str:
    """Fingerprint of everything that determines a run's results."""
    flat = flatten(OmegaConf.to_container(cfg, resolve=True))
    kept = {k: RENAMED[k].get(v, v) if k in RENAMED else v for k, v in flat.items()
            if not neutral(k) and not (k in ADDED_LATER and ADDED_LATER[k] == v)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def finished_result(path: Path, digest: str) -> dict | None:
    """The result file (summary.json, a pruning cell's record) of a run that finished with
    this config, else None. A run that finished with another config is refused, never
    overwritten."""
    if not path.exists():
        return None
    done = read_json(path)
    if done.get("status") not in FINISHED:
        return None
    if done.get("config_digest") != digest:
        raise ConfigError(f"{path.parent} holds a run that {done['status']} with another config "
                          f"(the defaults in conf/ changed, or hydra.run.dir points at another "
                          f"run): use another hydra.run.dir, or delete {path} to retrain")
    return done


def reused_objective(done: dict, objective_name: str) -> float:
    """A finished run's objective as a sweep records it (a diverged run's is the worst)."""
    objective = done.get("objective")
    return worst_objective(objective_name) if objective is None else objective


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda or "none"}
    for pkg in ("torchvision", "hydra-core", "omegaconf", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out
