"""PyTorch's own distributed engine for ZErase: process groups from torchrun's environment, and data parallelism
over the adapters only.

`launch()` reads what `torchrun` (or Slurm via torchrun) sets — RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT — and
joins the default process group: NCCL when CUDA is available, else gloo. Without those variables it is one process
and nothing is initialised.

`DataParallel` implements the trainer's data-parallel hooks (`SingleProcess`, below): each step's batch of
(trajectory, t) picks is drawn identically in every process (same seed, same RNG), each process keeps a contiguous
share of the rows, and the loss runs through `DistributedDataParallel` wrapped around the adapters alone (the DiT is
frozen and replicated, never wrapped). Only the adapters' gradients are all-reduced (plus a few scalars: the step's
losses and the λ probe), so the traffic is the adapter size per step: KBs on nano, MBs at Z-Image scale.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from torch.nn.parallel import DistributedDataParallel

DEFAULT_TIMEOUT = timedelta(hours=24)  # ranks wait for each other at the end of erase-many: concepts take hours


@dataclass(frozen=True)
class Launch:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialised: bool = False  # whether this call created the default process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """cuda:LOCAL_RANK when CUDA is available, else the CPU."""
        return torch.device("cuda", self.local_rank) if torch.cuda.is_available() else torch.device("cpu")

    def label(self) -> str:
        return f"rank {self.rank}/{self.world}"


def _environment_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} must be an integer (set by torchrun)") from None


def launch(timeout: timedelta = DEFAULT_TIMEOUT) -> Launch:
    """This process's place in a torchrun launch; joins the default process group when WORLD_SIZE > 1."""
    import torch.distributed as dist

    world = _environment_int("WORLD_SIZE", 1)
    rank = _environment_int("RANK", 0)
    local_rank = _environment_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world} are inconsistent; launch with torchrun")
    if world == 1:
        return Launch()
    if dist.is_initialized():
        return Launch(dist.get_rank(), dist.get_world_size(), local_rank, False)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=timeout)
    return Launch(rank, world, local_rank, True)


def shutdown(place: Launch) -> None:
    import torch.distributed as dist

    if place.initialised and dist.is_initialized():
        dist.destroy_process_group()


def barrier(place: Launch) -> None:
    import torch.distributed as dist

    if place.world > 1:
        dist.barrier()


def gather_objects(place: Launch, value):
    """Every rank's `value`, in rank order, on rank 0 (None elsewhere); [value] for one process."""
    import torch.distributed as dist

    if place.world == 1:
        return [value]
    gathered = [None] * place.world if place.is_main else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def broadcast_object(place: Launch, value):
    import torch.distributed as dist

    if place.world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def share(count: int, rank: int, world: int) -> range:
    """Contiguous rows of `count` for `rank`: the first count % world ranks get one more."""
    base, extra = divmod(count, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


class _Losses(nn.Module):
    """What DDP wraps: the adapters (its only parameters) and the trainer's loss function as the forward."""

    def __init__(self, adapters: nn.Module, function: Callable):
        super().__init__()
        self.adapters = adapters
        self.function = function

    def forward(self, picks):
        return self.function(picks)


class DataParallel:
    """The trainer's data-parallel hooks over the default process group (see the module docstring)."""

    def __init__(self, place: Launch):
        import torch.distributed as dist

        if place.world > 1 and not dist.is_initialized():
            raise RuntimeError("DataParallel needs the default process group; call distributed.launch() first")
        self.place = place
        self.world, self.rank = place.world, place.rank
        self._ddp: DistributedDataParallel | None = None
        self._module: _Losses | None = None

    def local(self, rows):
        rows = list(rows)
        return [rows[index] for index in share(len(rows), self.rank, self.world)]

    def _wrapped(self, function):
        from torch.nn.parallel import DistributedDataParallel

        adapters = function.__self__.adapters
        module = self._module  # set together with self._ddp
        if module is None or module.adapters is not adapters:
            module = self._module = _Losses(adapters, function)
            device = next(adapters.parameters()).device
            device_ids = [device.index] if device.type == "cuda" else None
            self._ddp = DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=False)
        module.function = function
        return self._ddp

    def losses(self, function, picks, sync: bool = True):
        if self.world == 1:
            return function(picks)
        ddp = self._wrapped(function)
        if sync:
            return ddp(picks)
        with ddp.no_sync():  # the caller takes gradients with autograd.grad and calls average_gradients
            return ddp(picks)

    def gradient_scale(self, local: int, total: int) -> float:
        """DDP averages the per-process gradients; scaling each by local·world/total makes that the batch mean."""
        return local * self.world / total

    def batch_mean(self, values: dict[str, torch.Tensor], local: int, total: int) -> dict[str, torch.Tensor]:
        """Per-process means over `local` rows -> the means over all `total` rows (one all-reduce)."""
        import torch.distributed as dist

        if self.world == 1:
            return values
        names = list(values)
        stacked = torch.stack([values[name].detach().double().reshape(()) for name in names]) * (local / total)
        if self.place.device.type == "cuda":
            stacked = stacked.to(self.place.device)
        dist.all_reduce(stacked)
        return dict(zip(names, stacked.cpu().unbind(), strict=True))

    def average_gradients(self, params) -> None:
        import torch.distributed as dist

        if self.world == 1:
            return
        for param in params:
            if param.grad is not None:
                dist.all_reduce(param.grad)
                param.grad /= self.world


class SingleProcess:
    """The trainer's data-parallel hooks for one process: every row is local and nothing is communicated.
    `DataParallel` implements the same hooks over torch.distributed (DDP over the adapters only)."""

    world = 1

    def local(self, rows):
        return list(rows)

    def losses(self, function, picks, sync: bool = True):
        return function(picks)

    def gradient_scale(self, local: int, total: int) -> float:
        return 1.0

    def batch_mean(self, values: dict[str, torch.Tensor], local: int, total: int) -> dict[str, torch.Tensor]:
        return values

    def average_gradients(self, params) -> None:
        pass
