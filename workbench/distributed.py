"""Several processes (``accelerate launch`` / ``torchrun``): rank, world size, barrier, broadcast, gather,
the search's communicator and an orderly shutdown. Every call works unchanged in a single process.

Process 0 decides (folder checks, the search's algorithm) and the others follow what it broadcasts.
"""

from __future__ import annotations

import gc
import os
from datetime import timedelta
from typing import Any

import torch

SHUTDOWN_TIMEOUT = timedelta(seconds=120)


def active() -> bool:
    """True when a process group of more than one process is running."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """How many processes take part (1 without a process group)."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """True when this process was started by ``accelerate launch`` / ``torchrun`` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for in one process)."""
    if active():
        torch.distributed.barrier()


def broadcast(obj: Any) -> Any:
    """Process 0's ``obj`` on every process (any picklable object)."""
    if not active():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list[Any] | None:
    """Every process's ``obj`` as a list on process 0 (in rank order); None on the others."""
    if not active():
        return [obj]
    out: list[Any] | None = [None] * world_size() if rank() == 0 else None
    torch.distributed.gather_object(obj, out, dst=0)
    return out


def all_mean(value: float) -> float:
    """The mean of ``value`` over every process."""
    if not active():
        return value
    # nccl (accelerate's backend on GPUs) reduces only tensors on the GPU
    cuda = torch.distributed.get_backend() == "nccl"
    t = torch.tensor([value], dtype=torch.float64,
                     device=torch.device("cuda", torch.cuda.current_device()) if cuda else None)
    torch.distributed.all_reduce(t)
    return float(t) / world_size()


class Comm:
    """The search's communicator: process 0 broadcasts each batch of work and gathers what every process did."""

    def __init__(self) -> None:
        self.active = active()
        self.rank = rank()
        self.world = world_size()

    def broadcast(self, obj: Any) -> Any:
        return broadcast(obj) if self.active else obj

    def gather(self, obj: Any) -> list[Any] | None:
        return gather(obj) if self.active else [obj]


def _default_store() -> Any:
    """The rendezvous store of the default group (process 0 serves it), or None where torch hides it."""
    try:
        return torch.distributed.distributed_c10d._get_default_store()
    except (AttributeError, RuntimeError, ValueError):
        return None


def shutdown() -> None:
    """Leave a multi-process run in order; the one way the CLI ends its process group.

    1. a barrier: every process has finished its collectives;
    2. ``destroy_process_group`` on every process, then a garbage collection, so the group's worker threads
       are done while the interpreter is fully alive (a gloo worker that releases a tensor during interpreter
       shutdown aborts the process: "terminate called without an active exception");
    3. a last rendezvous through the store, not through the destroyed group: every other process says it
       has destroyed its group, and process 0, which serves the store, waits for that before it may exit,
       so no process loses the store's server while it is still tearing down.
    Nothing happens without a process group; a process that died is waited for at most two minutes.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return
    me, world = rank(), world_size()
    store = _default_store() if world > 1 else None
    if world > 1:
        dist.barrier()
    dist.destroy_process_group()
    gc.collect()
    if store is None:
        return
    try:
        if me != 0:
            store.set(f"workbench/shutdown/{me}", "done")
        else:
            store.wait([f"workbench/shutdown/{r}" for r in range(1, world)], SHUTDOWN_TIMEOUT)
    except (RuntimeError, ValueError):  # DistStoreError and friends: a process that already went; nothing to order
        pass
