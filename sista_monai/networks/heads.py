"""Projection heads mapping encoder features to the shared D-dimensional, L2-normalised embedding space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ProjectionHead"]


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
