"""Where a command writes: its run (or sweep) directory must lie in a folder this process can
write, and a refused run leaves no folder behind, not even the empty ones Hydra made above it."""

from __future__ import annotations

import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src.core.errors import fail

# The nearest folder above the run (or sweep) directory that existed before this command: a
# refused run removes the empty folders made below it (src/cli/job.py).
existing_folder: Path | None = None


def writable_output(cfg: DictConfig, multirun: bool) -> None:
    """The run (or sweep) directory must lie in a folder this process can write: tried for
    real (a permission check says nothing for root, or on a read-only mount)."""
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)
    if cfg.hydra.output_subdir is None and OmegaConf.to_container(cfg.hydra.run)["dir"] == ".":
        return  # eval.py and plots.py write where their own keys say
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    try:
        target = Path(str(OmegaConf.select(cfg, key)))
    except Exception:  # an interpolation only the sweeper resolves (tune.py's study name)
        raw = str(OmegaConf.to_container(cfg.hydra)[key.split(".")[1]]["dir"])
        target = Path(raw.split("${")[0] or ".")
    folder = target
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    global existing_folder
    existing_folder = folder
    try:
        Path(tempfile.mkdtemp(prefix=".trainkit-probe-", dir=folder)).rmdir()
    except OSError as e:
        fail(f"cannot write in {folder} ({e.strerror}) to make {target}: pass "
             f"{key}=<a writable folder>, or fix its permissions")
