"""The device a run trains on, and the process-group set-up for runs launched with torchrun
(one worker per process)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from src.core.errors import ConfigError


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


def resolve_device(spec: str) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cpu', 'cuda', 'cuda:N' are checked."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", str(spec))
    if m is None:
        raise ConfigError(f"device={spec} is not a device: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ConfigError(f"device={spec} but no CUDA GPU is visible: use device=cpu or auto")
    index = int(m.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device={spec} but only {torch.cuda.device_count()} GPU(s) are "
                          f"visible: use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return torch.device(spec)


def wrap(model: nn.Module, d: Dist, device: torch.device, hook: object | None = None,
         hook_fn: object | None = None) -> nn.Module:
    """The module a run's steps call: `model` itself, or under torchrun its DDP wrapper (with
    the gradient exchange's communication hook, if any)."""
    if not d.enabled:
        return model
    wrapped = DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)
    if hook is not None:
        wrapped.register_comm_hook(hook, hook_fn)
    return wrapped
