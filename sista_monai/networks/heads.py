"""Projection heads mapping encoder features to the shared D-dimensional, L2-normalised embedding space, and the
learnable temperature of the image–report logits."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LearnableTemperature", "PositionCentering", "ProjectionHead"]


class PositionCentering(nn.Module):
    """Subtract from every patch position the running mean of its embeddings over the training images.

    A component of the patch embeddings that every image shares at a position — a *position code* — says nothing
    about the image, yet it decides a word's most similar patch when it dominates: an image-free codebook of shared
    position vectors solves STA's within-pair term (METHOD.md §2) and points every word at a fixed place, as a
    prior that never sees the image does. Removing the mean over images at each position (as SIA's report
    similarity removes the mean report feature, METHOD.md §7) leaves what the image itself puts at that position,
    so a word's similarities over the patches of one image differ only through the image.

    The mean is a running average (``momentum``) of the detached batch means seen in training, a buffer saved with
    the model (``running_mean``) and used as is in evaluation; a training batch is centred with the mean as it was
    before the batch updates it, so that an embedding never depends on the rest of its batch (retrieval and
    inference embed one image at a time). Under DDP the buffer is
    broadcast from rank 0 with the others.

    Args:
        num_positions: P, the number of patches.
        dim: the embedding width.
        momentum: weight of each new batch mean in the running mean.
        per_image: also subtract each image's mean over its positions (after the position means): what every patch of
            an image shares ("this image shows an effusion") does not change which patch a word prefers, and the
            STA losses can then only be lowered by what differs from patch to patch.
    """

    running_mean: torch.Tensor

    def __init__(self, num_positions: int, dim: int, momentum: float = 0.1, per_image: bool = False) -> None:
        super().__init__()
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}.")
        self.momentum = float(momentum)
        self.per_image = bool(per_image)
        self.register_buffer("running_mean", torch.zeros(num_positions, dim))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, P, C)`` patch embeddings minus the running mean of their position."""
        if patches.shape[-2:] != self.running_mean.shape:
            raise ValueError(
                f"PositionCentering holds {tuple(self.running_mean.shape)} (positions, width), got patches "
                f"{tuple(patches.shape)}."
            )
        centred = patches - self.running_mean.to(patches.dtype).clone()
        if self.per_image:
            centred = centred - centred.mean(dim=-2, keepdim=True)
        if self.training:
            with torch.no_grad():
                batch_mean = patches.detach().float().mean(dim=0).to(self.running_mean.dtype)
                updated = torch.lerp(self.running_mean, batch_mean, self.momentum)
                # a non-finite batch (which the trainer may skip) must not poison the mean of every later batch
                self.running_mean.copy_(torch.where(torch.isfinite(batch_mean), updated, self.running_mean))
        return centred

    def extra_repr(self) -> str:
        shape = self.running_mean.shape
        return f"num_positions={shape[0]}, dim={shape[1]}, momentum={self.momentum}, per_image={self.per_image}"


class ProjectionHead(nn.Module):
    """``Linear → GELU → Linear`` on the last axis, then L2 normalisation (a linear map when ``hidden_dim=0``).

    Works on global features ``(B, C)`` and on patch/token features ``(B, N, C)`` alike. No batch
    normalisation, so the output of a sample does not depend on the rest of its batch (retrieval and
    inference embed one image at a time).

    Args:
        in_dim: encoder feature width.
        out_dim: embedding width D (128 in the paper recipe).
        hidden_dim: width of the hidden layer; ``None`` uses ``in_dim``; 0 makes the head a single linear map.
        centering: applied to the projection before the normalisation (:class:`PositionCentering` for patches).
    """

    def __init__(
        self, in_dim: int, out_dim: int = 128, hidden_dim: int | None = None, centering: nn.Module | None = None
    ) -> None:
        super().__init__()
        hidden = in_dim if hidden_dim is None else hidden_dim
        if hidden == 0:
            self.net: nn.Module = nn.Linear(in_dim, out_dim)
        else:
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        self.centering = centering

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Project (and centre, with ``centering``, e.g. :class:`PositionCentering`), then L2-normalise."""
        projected = self.net(features)
        if self.centering is not None:
            projected = self.centering(projected)
        return F.normalize(projected, dim=-1)


class LearnableTemperature(nn.Module):
    """A learnable contrastive temperature ``tau``, stored as ``log(tau)`` and clamped to bounds in every forward.

    CLIP learns the logit scale ``1 / tau`` as a log-parameterised scalar clamped at 100 (``tau >= 0.01``);
    open_clip keeps it in the model (``logit_scale``), so that the optimiser, checkpoints and DDP's gradient
    averaging treat it as any other weight. :class:`~sista_monai.networks.SISTAModel` holds one for SIA.

    Args:
        temperature: the initial ``tau``.
        bounds: ``(min, max)`` of ``tau``.

    Raises:
        ValueError: when the bounds are not ``0 < min <= max`` or ``temperature`` lies outside them.

    References:
        Radford, Alec, et al. "Learning Transferable Visual Models From Natural Language Supervision." ICML 2021
        (https://arxiv.org/abs/2103.00020): the learnable, clamped log-scale temperature.
    """

    def __init__(self, temperature: float = 0.07, bounds: tuple[float, float] = (0.01, 1.0)) -> None:
        super().__init__()
        low, high = (float(b) for b in bounds)
        if not 0 < low <= high:
            raise ValueError(f"temperature_bounds must satisfy 0 < min <= max, got {tuple(bounds)}.")
        if not low <= temperature <= high:
            raise ValueError(f"temperature {temperature} is outside temperature_bounds {(low, high)}.")
        self.bounds = (low, high)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))

    def forward(self) -> torch.Tensor:
        """``tau = exp(clamp(log_temperature, log(min), log(max)))``, a scalar with gradient inside the bounds."""
        low, high = self.bounds
        return self.log_temperature.clamp(math.log(low), math.log(high)).exp()

    def extra_repr(self) -> str:
        return f"bounds={self.bounds}"
