"""Process-group set-up for runs launched with torchrun (one worker per process)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank r of `world` (1 when not launched by torchrun)."""

    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes the run's files."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def adopt_batch_tasks() -> None:
    """Inside a submitit job of several tasks (SLURM's tasks_per_node, or the local executor's),
    export the variables torchrun would set (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE,
    LOCAL_RANK), so that each task is one DDP worker exactly as under torchrun."""
    if "WORLD_SIZE" in os.environ or not os.environ.get("SUBMITIT_EXECUTOR"):
        return
    import submitit

    if submitit.JobEnvironment().num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def process_rank() -> int:
    """This process's global rank before the process group exists (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


def init(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the torchrun job (NCCL on GPUs, gloo on CPUs); returns the rank and its device.

    A rank that waits on a failed peer gives up after the timeout instead of hanging forever;
    torchrun itself ends the other ranks when one exits with an error.
    """
    if not launched_by_torchrun():
        return Dist(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=timedelta(minutes=10))
    return Dist(dist.get_rank(), dist.get_world_size()), device


def all_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum a tensor over all ranks (identity for a single process)."""
    if d.enabled:
        t = t.clone()
        dist.all_reduce(t)
    return t


def broadcast_object(obj: object, d: Dist) -> object:
    """Rank 0's value of a picklable object on every rank."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
