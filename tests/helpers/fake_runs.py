"""Run directories written by hand, as train.py leaves them: .hydra/, history.jsonl and
summary.json, for the figure tests' messy folders."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def fake_run(root: Path, name: str, config: dict, choices: dict, overrides: list[str],
             status: str = "completed", metrics: dict | None = None,
             history: list[dict] | None = None) -> Path:
    """A run directory as train.py leaves it, written by hand."""
    path = root / name
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (path / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"runtime": {"choices": choices}}}))
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    history = history if history is not None else [
        {"epoch": e, "step": 10 * e, "val_acc": 0.5 + 0.1 * e, "val_loss": 1.0 / e}
        for e in (1, 2, 3)]
    (path / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    (path / "summary.json").write_text(json.dumps(
        {"status": status, "metrics": metrics if metrics is not None else
         {"val_acc": history[-1]["val_acc"] if history else None}}))
    return path


def sgd(root: Path, lr: float, seed: int, **kw) -> Path:
    config = {"seed": seed, "epochs": 3, "trainer": {"progress": seed % 2 == 0},
              "data_dir": f"/data/{seed}", "optimizer": {"_target_": "torch.optim.SGD", "lr": lr}}
    config.update(kw.pop("config", {}))
    return fake_run(root, f"optimizer.lr={lr},seed={seed}", config,
                    {"optimizer": "sgd", "dataset": kw.pop("dataset", "digits")},
                    [f"optimizer.lr={lr}", f"seed={seed}"], **kw)
