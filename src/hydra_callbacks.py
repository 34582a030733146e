"""Hydra callbacks used by tune.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class MakeSqliteFolder(Callback):
    """Create the folder of a sqlite Optuna storage before the sweeper opens it.

    sqlite cannot create missing folders, and the sweeper opens the study before Hydra makes the
    sweep directory.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        storage = config.hydra.sweeper.get("storage")
        prefix = "sqlite:///"
        if storage and str(storage).startswith(prefix):
            Path(str(storage)[len(prefix):]).expanduser().parent.mkdir(parents=True,
                                                                     exist_ok=True)
