"""Data-parallel training under ``torchrun``: the trainer's one distributed dependency.

``torchrun --nproc_per_node N -m vpeft train ...`` starts N copies of the same trainer. Each takes its share of every
global batch (``batch[rank::N]``), scales its loss by its share of the batch, and after the backward pass the
gradients of the **trainable** tensors are summed across processes in one flat all-reduce, so every process steps
with exactly the gradient of the global batch. Frozen tensors never travel, and a trainable tensor that got no
gradient this step counts as zero, so a frozen backbone or a conditional branch cannot trip DDP's unused-parameter
check. Rank 0 writes the run directory.

Every collective runs on the process group's device, :attr:`Dist.device`: ``cuda:LOCAL_RANK`` under nccl (which has
no CPU tensors), the CPU under gloo. Values are built there (:meth:`Dist.sum_floats`), and a tensor that lives
elsewhere is copied there and back. Each process augments only its share of every batch, and evaluation is
sharded the same way: the trainer scores ``batch[rank::N]`` of every evaluation batch and sums the counts once per
split. :meth:`Dist.sum_tensor_` sums device tensors in place and :meth:`Dist.gather_shards` gathers per-item results of
contiguous shares (:meth:`Dist.shard_range`) in item order, for metrics that need every prediction.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """This process's share of a global batch."""
        return x[self.rank :: self.world] if self.enabled else x

    def shard_range(self, n: int) -> range:
        """This process's contiguous share of ``n`` items: ``[rank * n // world, (rank + 1) * n // world)``. Over the
        processes every item falls in exactly one share, in order; shares differ in size by at most one."""
        return range(self.rank * n // self.world, (self.rank + 1) * n // self.world)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_(self, tensors) -> None:
        """Copy rank 0's values into every process's tensors (the trainable start point)."""
        if self.enabled:
            for t in tensors:
                data = t.data
                buf = self._on_device(data)
                dist.broadcast(buf, 0)
                if buf is not data:
                    data.copy_(buf)

    def sum_tensor_(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` across processes, in place, and return it: no host sync when ``t`` is on :attr:`device`."""
        if self.enabled:
            buf = self._on_device(t)
            dist.all_reduce(buf)
            if buf is not t:
                t.copy_(buf)
        return t

    def sum_grads_(self, params) -> None:
        """Sum the gradients of ``params`` across processes, in place (missing gradients count as zero)."""
        if not self.enabled:
            return
        params = list(params)
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = self.sum_tensor_(self._on_device(torch.cat([p.grad.reshape(-1) for p in params])))
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n

    def sum_floats(self, values: list[float]) -> list[float]:
        """Sum a few host numbers across processes (in float64; one host sync)."""
        if not self.enabled:
            return values
        return self.sum_tensor_(torch.tensor(values, dtype=torch.float64, device=self.device)).tolist()

    def gather_shards(self, t: torch.Tensor, n: int) -> torch.Tensor:
        """Every process's rows for its :meth:`shard_range` of ``n`` items (``t``: this process's, in order),
        concatenated in item order on every process, on :attr:`device`."""
        if not self.enabled:
            return t
        sizes = [len(Dist(rank=r, world=self.world).shard_range(n)) for r in range(self.world)]
        if len(t) != sizes[self.rank]:
            raise ValueError(f"rank {self.rank} holds {len(t)} of {n} items, its shard has {sizes[self.rank]}")
        t = self._on_device(t)
        padded = torch.cat([t, t.new_zeros((max(sizes) - len(t), *t.shape[1:]))])  # all_gather needs equal sizes
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:s] for p, s in zip(parts, sizes)])

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    def _on_device(self, t: torch.Tensor) -> torch.Tensor:
        return t if t.device == self.device else t.to(self.device)


def setup(device: str) -> Dist:
    """Join the process group ``torchrun`` describes in the environment (nccl when ``device`` is CUDA and CUDA is
    available, else gloo); a plain single-process run gets a no-op :class:`Dist`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        cuda = torch.cuda.is_available() and (device == "auto" or torch.device(device).type == "cuda")
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if cuda else "gloo")
        owns = True
    on = torch.device("cuda", local) if dist.get_backend() == "nccl" else torch.device("cpu")
    return Dist(rank=rank, world=world, local_rank=local, owns_group=owns, device=on)
