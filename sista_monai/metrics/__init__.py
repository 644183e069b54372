"""Metrics that MONAI and Ignite do not already provide."""

from __future__ import annotations

from .retrieval import DIRECTIONS, RetrievalRecall, retrieval_recall

__all__ = ["DIRECTIONS", "RetrievalRecall", "retrieval_recall"]
from .grounding import FalseNegativeFlags, PointingGame, flag_statistics, pointing_game, zone_cells

__all__ += ["FalseNegativeFlags", "PointingGame", "flag_statistics", "pointing_game", "zone_cells"]
