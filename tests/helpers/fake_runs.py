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


def classify(root: Path, name: str, optimizer: str = "momentum", lr: float = 0.1,
             seed: int = 0, epochs: int = 3, typed: tuple[str, ...] = (), status: str =
             "completed", **top: object) -> Path:
    """A digits classify run as train.py leaves it: the default config (momentum, cosine, two
    EMAs, batch 128, 32 bits, one worker) with `optimizer`, `lr`, `epochs` and top-level keys
    changed; its history's val_acc rises by one point per epoch from a value the lr sets."""
    opt = {"momentum": {"_target_": "torch.optim.SGD", "lr": lr, "momentum": 0.9,
                        "weight_decay": 5e-4},
           "adam": {"_target_": "torch.optim.Adam", "lr": lr, "betas": [0.9, 0.999],
                    "weight_decay": 0.0},
           "compressed_sgd_vote": {"_target_": "src.optim.compressed.CompressedSGD", "lr": lr,
                                   "weight_decay": 0.0}}[optimizer]
    compression = ({"compressor": {"_target_": "src.compression.compressors.MinMax",
                                   "num_bits": top.get("num_bits", 32)}, "aggregate": "vote"}
                   if optimizer.startswith("compressed") else {})
    config = {"seed": seed, "epochs": epochs, "batch_size": 128, "num_bits": 32, "workers": 1,
              "optimizer": opt, "compression": compression,
              "scheduler": {"_target_": "src.optim.schedulers.cosine"},
              "averaging": {"decays": [0.9, 0.99]}, "trainer": {"progress": False}}
    config.update(top)
    if "weight_decay" in top:
        config["optimizer"]["weight_decay"] = config.pop("weight_decay")
    start = 0.3 + 0.2 * lr
    history = [{"epoch": e, "step": 10 * e, "val_acc": start + 0.01 * e,
                "ema_0.9/val_acc": start, "ema_0.99/val_acc": start - 0.1}
               for e in range(1, epochs + 1)]
    choices = {"optimizer": optimizer, "dataset": "digits", "scheduler": "cosine",
               "compression": "minmax" if compression else "none", "averaging": "ema"}
    return fake_run(root, name, config, choices, list(typed), status=status, history=history,
                    metrics={"val_acc": history[-1]["val_acc"], "test_acc": start})


def mixed_folder(root: Path) -> Path:
    """The folder of issue 33 in miniature: an lr x seed grid, an Adam run, a 1-bit compressed
    run with 4 workers, a tune.py trial with another batch size, a one-epoch run."""
    for lr in (0.03, 0.3):
        for seed in (0, 1):
            classify(root, f"optimizer.lr={lr},seed={seed}", lr=lr, seed=seed,
                     typed=(f"optimizer.lr={lr}", f"seed={seed}"))
    classify(root, "adam", "adam", lr=0.001, epochs=2, typed=("optimizer=adam",))
    classify(root, "csgd", "compressed_sgd_vote", lr=1e-4, epochs=1, num_bits=1, workers=4,
             typed=("optimizer=compressed_sgd_vote", "num_bits=1", "workers=4"))
    classify(root, "trial", lr=0.84, epochs=4, batch_size=64, weight_decay=0.0017,
             typed=("batch_size=64", "optimizer.lr=0.84", "optimizer.weight_decay=0.0017"))
    classify(root, "one_epoch", epochs=1, typed=("epochs=1",))
    return root
