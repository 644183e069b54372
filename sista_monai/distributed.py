"""Ranks and the end of a distributed run: the one place that asks ``torch.distributed`` who this process is.

:func:`rank`, :func:`world_size`, :func:`local_rank` and :func:`is_main_process` answer for a process with or
without an initialised process group (before ``init_process_group`` a ``torchrun`` process reads its
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` environment): every rank-0-only writer and the bundles' configs
(``multi_gpu_train.json``'s rank and device, the global batch size) use them. :func:`world_info` is what
collectives see: the initialised process group's rank and size, ``(0, 1)`` without one; the cross-rank gathers
of the losses and metrics and the optimiser step's agreement on a skipped batch use it.

Ending a distributed bundle run so that no rank aborts at interpreter exit: every ``multi_gpu_train.json`` ends with :func:`finish_process_group`. A plain ``dist.barrier()`` as the last
collective of a gloo run (CPU ``torchrun``) lets a rank abort *after* all of its outputs are written, with
``terminate called without an active exception`` (exit code -6), now and then and more often under load.
The race, read from a core dump of a two-process gloo run (PyTorch 2.14):

1. ``barrier()`` returns to Python as soon as gloo marks the barrier's work completed;
2. the gloo worker thread that ran it still owns a reference to that work, and the barrier work holds every
   collective that was unfinished when it was queued (its prior work), with their tensors;
3. if Python drops its own reference first, the worker thread destroys the works, and releasing a tensor that
   has a Python object needs the GIL; when the main thread has meanwhile started interpreter finalization,
   taking the GIL ends the worker thread with ``pthread_exit``, whose unwinding through a ``noexcept``
   destructor calls ``std::terminate``.

``dist.destroy_process_group()`` does not close this window for gloo: the gloo backend has no ``shutdown``,
and the ``DistributedDataParallel`` wrapper (held by the bundle's config) keeps the group and its worker
threads alive. :func:`finish_process_group` instead keeps the barrier's work referenced from Python until the
interpreter exits, so the worker thread never holds the last reference to a work with Python-owned tensors:
their release happens on the main thread, with the GIL. With NCCL the process group is destroyed, as PyTorch
asks before exit.

Measured by ``python -m sista_monai.bench gloo_exit --trials 45`` (two-process gloo DDP job, the two endings
alternated; 2 CPU cores): ``dist.barrier()`` aborted at exit in 3 of 45 trials, :func:`finish_process_group`
in 0 of 45 (no abort by luck at the baseline's rate: probability 0.045).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = [
    "rank",
    "world_size",
    "local_rank",
    "is_main_process",
    "is_distributed",
    "world_info",
    "finish_process_group",
]

_FINAL_WORKS: list[Any] = []
"""Works of final barriers, kept referenced until the interpreter exits (see the module docstring)."""


def is_distributed() -> bool:
    """Whether a default process group is initialised."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def world_info() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised default process group, ``(0, 1)`` without one.

    What a collective sees: unlike :func:`rank` and :func:`world_size` it ignores ``torchrun``'s environment,
    so a process without a process group never slices a batch for ranks it cannot gather from.
    """
    if is_distributed():
        import torch.distributed as dist

        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank() -> int:
    """This process's rank: the process group's, else ``torchrun``'s ``RANK`` variable, else 0."""
    return world_info()[0] if is_distributed() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """The number of processes: the process group's, else ``torchrun``'s ``WORLD_SIZE`` variable, else 1."""
    return world_info()[1] if is_distributed() else int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """This process's rank on its machine (``torchrun``'s ``LOCAL_RANK`` variable, else 0): its GPU's index."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Whether this process is rank 0, the one that writes files and reports."""
    return rank() == 0


def finish_process_group() -> bool:
    """Wait for every rank, then end the process group so that no rank can abort at interpreter exit.

    A no-op (returns ``False``) without an initialised default process group. With NCCL the group is destroyed;
    with gloo (and any other backend) it is left to the interpreter's exit, the final barrier's work held until
    then. Returns ``True`` when a barrier ran.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return False
    work = dist.barrier(async_op=True)
    work.wait()
    if dist.get_backend() == "nccl":
        dist.destroy_process_group()
    else:
        _FINAL_WORKS.append(work)
    return True
