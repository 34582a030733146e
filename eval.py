"""Evaluate a run's checkpoint on the test set: python eval.py checkpoint=<run dir>."""

from src.sweeps import interrupt

interrupt.install()  # before the heavy imports: a Ctrl-C while they load is one line too

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from src.sweeps.cli import report_user_errors, run_entry_point
from src.sweeps.help import eval_help


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from src.errors import ConfigError
    from src.evaluation.checkpoints import evaluate_run, locate, table

    if OmegaConf.is_missing(cfg, "checkpoint"):
        raise ConfigError("eval.py needs checkpoint=<run dir or its checkpoint.pt>, e.g. "
                          "checkpoint=outputs/runs/default")
    splits = list(cfg.splits)
    metrics = evaluate_run(cfg.checkpoint, splits, cfg.device, cfg.data_dir, cfg.batch_size)
    print(table(metrics, splits))
    run_dir, ckpt = locate(cfg.checkpoint)
    out = run_dir / "eval.json"
    out.write_text(json.dumps({"checkpoint": str(ckpt), "splits": splits,
                               "config": OmegaConf.to_container(cfg), "metrics": metrics},
                              indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    run_entry_point(main, Path(__file__).resolve().parent / "conf", "eval", eval_help)
