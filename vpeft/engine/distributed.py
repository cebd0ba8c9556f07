"""Data-parallel training under ``torchrun``: the trainer's one distributed dependency.

``torchrun --nproc_per_node N -m vpeft train ...`` starts N copies of the same trainer. Each takes its share of every
global batch (``batch[rank::N]``), scales its loss by its share of the batch, and after the backward pass the
gradients of the **trainable** tensors are summed across processes in one flat all-reduce, so every process steps
with exactly the gradient of the global batch. Frozen tensors never travel, and a trainable tensor that got no
gradient this step counts as zero, so a frozen backbone or a conditional branch cannot trip DDP's unused-parameter
check. Rank 0 writes the run directory; every rank evaluates (the models are identical).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """This process's share of a global batch."""
        return x[self.rank :: self.world] if self.enabled else x

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_(self, tensors) -> None:
        """Copy rank 0's values into every process's tensors (the trainable start point)."""
        if self.enabled:
            for t in tensors:
                dist.broadcast(t.data, 0)

    def sum_grads_(self, params) -> None:
        """Sum the gradients of ``params`` across processes, in place (missing gradients count as zero)."""
        if not self.enabled:
            return
        params = list(params)
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n

    def sum_floats(self, values: list[float]) -> list[float]:
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def setup(device: str) -> Dist:
    """Join the process group ``torchrun`` describes in the environment (gloo on CPU, nccl on CUDA); a plain
    single-process run gets a no-op :class:`Dist`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        cuda = device != "cpu" and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if cuda else "gloo")
        owns = True
    return Dist(rank=rank, world=world, local_rank=local, owns_group=owns)
