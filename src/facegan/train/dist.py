"""Multi-process training with torch.distributed (DDP), launched by `torchrun --nproc-per-node N`.

`train.batch_size` is the GLOBAL batch: each of the N ranks takes its 1/N slice of the same
seeded global batch (and of the same latents), so N processes compute the gradient of the same
global batch as one process would, for nets without BatchNorm (StyleGAN2); BatchNorm normalises each
rank's slice with its own statistics (a warning says so). Only rank 0 writes checkpoints, samples and
MLflow records.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as td

from facegan.launch import in_torchrun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1  # the processes of this run on this host (torchrun's LOCAL_WORLD_SIZE)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a tensor drawn for the whole global batch."""
        if not self.active:
            return x
        per = len(x) // self.world
        return x[self.rank * per : (self.rank + 1) * per]

    def all_sum(self, values: list[float]) -> list[float]:
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        td.all_reduce(t)
        return t.tolist()

    def total(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of a tensor over ranks (a copy; no gradient flows through; on NCCL queued on the device)."""
        y = x.detach().clone()
        if self.active:
            td.all_reduce(y)
        return y

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """Average of a tensor over ranks (a copy; no gradient flows through)."""
        return self.total(x) / self.world if self.active else x.detach().clone()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if td.get_backend() == "nccl" else torch.device("cpu")


def setup(device_name: str) -> tuple[Dist, str]:
    """Join the process group when started by torchrun; returns (Dist, device name for this rank)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 or not in_torchrun():
        return Dist(), device_name
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    if not td.is_initialized():
        td.init_process_group(backend="nccl" if cuda else "gloo")
    log.info("DDP rank %d/%d (%s)", rank, world, "nccl" if cuda else "gloo")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return Dist(rank, world, local, local_world), (f"cuda:{local}" if cuda else "cpu")


def teardown(failed: bool = False) -> None:
    """Leave the process group: after a barrier when every rank got here, at once when this rank `failed` (an error
    on rank 0 alone, e.g. a full disk while checkpointing, would wait at a barrier the other ranks, blocked in their
    next step's all-reduce, never reach: the job hung until the process group's timeout, the error unprinted)."""
    if td.is_initialized():
        if not failed:
            td.barrier()
        td.destroy_process_group()
