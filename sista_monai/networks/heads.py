"""Projection heads mapping encoder features to the shared D-dimensional, L2-normalised embedding space, and the
learnable temperature of the image–report logits."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LearnableTemperature", "ProjectionHead"]


class ProjectionHead(nn.Module):
    """``Linear → GELU → Linear`` on the last axis, then L2 normalisation (a linear map when ``hidden_dim=0``).

    Works on global features ``(B, C)`` and on patch/token features ``(B, N, C)`` alike. No batch
    normalisation, so the output of a sample does not depend on the rest of its batch (retrieval and
    inference embed one image at a time).

    Args:
        in_dim: encoder feature width.
        out_dim: embedding width D (128 in the paper recipe).
        hidden_dim: width of the hidden layer; ``None`` uses ``in_dim``; 0 makes the head a single linear map.
    """

    def __init__(self, in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden = in_dim if hidden_dim is None else hidden_dim
        if hidden == 0:
            self.net: nn.Module = nn.Linear(in_dim, out_dim)
        else:
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Project and L2-normalise along the last axis."""
        return F.normalize(self.net(features), dim=-1)


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
