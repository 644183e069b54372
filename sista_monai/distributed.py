"""Ending a distributed bundle run so that no rank aborts at interpreter exit.

Every ``multi_gpu_train.json`` ends with :func:`finish_process_group`. A plain ``dist.barrier()`` as the last
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

from typing import Any

__all__ = ["finish_process_group"]

_FINAL_WORKS: list[Any] = []
"""Works of final barriers, kept referenced until the interpreter exits (see the module docstring)."""


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
