"""Evaluate a run's checkpoint on the test set: python eval.py checkpoint=<run dir>."""

from src.cli import interrupt

interrupt.install()  # before the heavy imports: a Ctrl-C while they load is one line too

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from src.cli.entry import run_entry_point
from src.cli.help import eval_help
from src.core.errors import report_user_errors
from src.core.files import CONF, check_writable, write_json_atomic


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="eval")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from src.core.errors import ConfigError
    from src.tasks.evaluate import evaluate_run, locate, table

    if OmegaConf.is_missing(cfg, "checkpoint"):
        raise ConfigError("eval.py needs checkpoint=<run dir or its checkpoint.pt>, e.g. "
                          "checkpoint=outputs/runs/default")
    run_dir, ckpt = locate(cfg.checkpoint)
    out = Path(cfg.out).expanduser() if cfg.out is not None else run_dir / "eval.json"
    try:  # before evaluating: a folder it cannot write is one line, not a table and a line
        check_writable(out)
    except OSError as e:
        raise ConfigError(f"cannot write {out} ({e.strerror or type(e).__name__}): pass "
                          f"out=<a writable file> to keep the results elsewhere") from None
    splits = list(cfg.splits)
    metrics = evaluate_run(ckpt, splits, cfg.device, cfg.data_dir, cfg.batch_size)
    print(table(metrics, splits))
    write_json_atomic(out, {"checkpoint": str(ckpt), "splits": splits,
                            "config": OmegaConf.to_container(cfg), "metrics": metrics})
    print(f"wrote {out}")


if __name__ == "__main__":
    run_entry_point(main, CONF, "eval", eval_help)
