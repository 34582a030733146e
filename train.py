"""Train one model, or a sweep with --multirun. `python train.py --help` lists every option."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.cli import check_overrides, register_resolvers, report_user_errors

CONF = Path(__file__).resolve().parent / "conf"
register_resolvers()


def _run_dir() -> Path | None:
    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@report_user_errors(_run_dir)
def main(cfg: DictConfig) -> float:
    from src.runner import run  # after Hydra has parsed the command line: --help stays fast

    return run(cfg, _run_dir())


if __name__ == "__main__":
    check_overrides(sys.argv[1:], CONF)
    main()
