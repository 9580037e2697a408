"""Multi-process training through the standard engine: ``torchrun`` + ``DistributedDataParallel``.

``torchrun`` (``python -m torch.distributed.run``) starts one process per device and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and
joins the process group with ``nccl`` on GPUs and ``gloo`` on CPUs.  Without those variables (a plain
``python`` run) everything here is a no-op for a single process.  Only rank 0 writes files and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from moge2_ros.errors import Moge2RosError

__all__ = ["DistributedError", "DistInfo", "init_distributed", "shutdown_distributed", "barrier", "all_reduce_sum",
           "broadcast_object", "resolve_train_device"]


class DistributedError(Moge2RosError):
    """The distributed environment is inconsistent (bad torchrun variables, missing devices)."""


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job.

    Attributes:
        rank: global rank (0 .. world_size - 1); local_rank: rank on this node (the CUDA device index).
        world_size: number of processes; backend: ``"gloo"``, ``"nccl"`` or None (single process).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and logs."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """A process group with more than one process is active."""
        return self.backend is not None and self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"environment variable {name}={value!r}: expected an integer (set by torchrun)") \
            from None


def resolve_train_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``; CUDA processes use ``cuda:local_rank``.

    Raises:
        DistributedError: CUDA requested but absent, or fewer CUDA devices than local ranks.
    """
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    if preference == "cpu":
        return torch.device("cpu")
    if preference != "cuda":
        raise DistributedError(f"device {preference!r}: expected auto, cpu or cuda")
    if not torch.cuda.is_available():
        raise DistributedError("device 'cuda': CUDA is not available here (torch.cuda.is_available() is False); "
                               "use cpu")
    if local_rank >= torch.cuda.device_count():
        raise DistributedError(f"local rank {local_rank} needs cuda:{local_rank}, but only "
                               f"{torch.cuda.device_count()} CUDA device(s) are visible")
    return torch.device("cuda", local_rank)


def init_distributed(device_preference: str = "auto", timeout_s: float = 1800.0) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group if there is one (``WORLD_SIZE > 1``), else run as one process.

    Args:
        device_preference: ``auto``, ``cpu`` or ``cuda`` (see :func:`resolve_train_device`).
        timeout_s: collective-operation timeout.

    Returns:
        ``(info, device)``.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise DistributedError(f"inconsistent torchrun variables RANK={rank}, WORLD_SIZE={world_size}")
    device = resolve_train_device(device_preference, local_rank if world_size > 1 else 0)
    if world_size == 1:
        return DistInfo(), device
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=timeout_s))
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend), device


def shutdown_distributed(info: DistInfo) -> None:
    """Leave the process group (no-op for a single process)."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op for a single process)."""
    if info.enabled:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place and return it (unchanged for a single process)."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
