"""Cross-rank gathering for the contrastive losses.

The SIA loss needs negatives from the whole global batch (METHOD.md §1, "Multi-GPU"): every rank gathers the
image and report embeddings of all ranks and computes the rows of its own samples against all columns
("local vs global" logits, as in open_clip's ``ClipLoss(local_loss=True, gather_with_grad=True)``).

All helpers are the identity when ``torch.distributed`` is unavailable, not initialised, or has a single
process, so the same code runs in one process on a laptop CPU and under ``torchrun`` with DDP. Only collectives
that every backend implements are used (``gloo`` on CPU included); there is no NCCL-only path.

Gradient convention: :func:`gather_with_grad` gives each rank the gradient of the **sum** of the per-rank
losses with respect to its local tensor. DDP averages parameter gradients over ranks (divides by the world
size), so the parameters receive the gradient of the **mean** of the per-rank losses, which is the
single-process loss on the concatenated batch when each rank's loss is normalised by its local batch size.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_gather as _all_gather_autograd

from sista_monai.distributed import world_info

__all__ = ["gather_with_grad", "gather_no_grad", "all_reduce_sum_no_grad"]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dimension 0, keeping the gradient path to every slot.

    Uses :func:`torch.distributed.nn.functional.all_gather`, the autograd-aware all-gather shipped with
    PyTorch. Its backward sums, over ranks, the gradients that reach this rank's slot of the gathered tensor
    (reduce-scatter on NCCL/XCCL; on ``gloo`` and other backends PyTorch emulates it with an all-to-all and a
    sum), so the gradient returned for ``x`` on rank ``r`` is the gradient of the sum of all ranks' losses
    with respect to ``x``. With DDP's gradient averaging this yields the single-process gradient (see the
    module docstring). It was preferred to a home-made ``autograd.Function`` (all-gather forward, all-reduce
    backward) because it is maintained with PyTorch and works with ``gloo`` on CPU, which the tests use.

    Every rank must pass a tensor of the same shape (``DistributedSampler`` guarantees equal local batches).

    Args:
        x: local tensor of shape ``(B, ...)``.

    Returns:
        ``x`` itself with one process, else a tensor of shape ``(B * world_size, ...)`` in rank order, in which
        rows ``rank * B`` to ``rank * B + B - 1`` are this rank's ``x``.
    """
    if world_info()[1] == 1:
        return x
    return torch.cat(_all_gather_autograd(x.contiguous()), dim=0)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dimension 0 without a gradient path.

    Args:
        x: local tensor of shape ``(B, ...)``, the same shape on every rank.

    Returns:
        ``x`` itself (detached) with one process, else a detached tensor of shape ``(B * world_size, ...)``
        in rank order.
    """
    x = x.detach()
    if world_info()[1] == 1:
        return x
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(world_info()[1])]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=0)


def all_reduce_sum_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` over ranks (a detached copy; ``x`` is left untouched). Identity with one process.

    Args:
        x: a tensor with the same shape on every rank, e.g. a count.

    Returns:
        The element-wise sum over ranks, detached.
    """
    y = x.detach().clone()
    if world_info()[1] > 1:
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y
