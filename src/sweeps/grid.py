"""train.py -m: Hydra's basic sweeper (Cartesian product of the swept values), except that a
failed job does not end the sweep; at the end it reports every job's outcome."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from src.sweeps.report import new_report


class GridSweeper(BasicSweeper):
    """Hydra's basic sweeper's configuration keys (`params`, `max_batch_size`), and
    `sweep_name` and `jobs` (how many the sweep has: "job k of N" in each job's log), which the
    sweeper sets in each of its jobs, not reads."""

    def __init__(self, max_batch_size: int | None = None, params: Any = None,
                 sweep_name: str | None = None, jobs: int | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*self._parse_config(), *arguments])
        self.overrides = self.split_arguments(overrides, self.max_batch_size)
        # what the trackers group the jobs by: the sweep as typed (logger=mlflow: its experiment)
        name = " ".join(arguments) or str(self.config.hydra.job.name)
        quoted = name.replace("\\", "\\\\").replace("'", "\\'")
        jobs = sum(len(batch) for batch in self.overrides)
        self.overrides = [[[*job, f"hydra.sweeper.sweep_name='{quoted}'",
                            f"hydra.sweeper.jobs={jobs}"] for job in batch]
                          for batch in self.overrides]
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        report, returns, index = new_report(str(self.config.get("objective", "objective"))), [], 0
        while not self.is_done():
            batch = self.get_job_batch()
            if not getattr(self.launcher, "composes_up_front", False):
                self.validate_batch_is_legal(batch)  # a composition error ends the sweep first
            results = self.launcher.launch(batch, initial_job_idx=index)
            report.add(results)  # instead of re-raising the first failed job's exception
            index += len(batch)
            returns.append(results)
        report.print()
        return returns
