"""Evaluate a run's checkpoint on the test set: python eval.py checkpoint=<run dir>."""

import json
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from src.sweeps.cli import quote_paths, report_user_errors


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from src.evaluation import evaluate_run, locate, table

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
    sys.argv[1:] = quote_paths(sys.argv[1:])
    main()
