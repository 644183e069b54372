"""Metrics that MONAI and Ignite do not already provide."""

from __future__ import annotations

from .grounding import (
    GAMES,
    FalseNegativeFlags,
    PatchesKept,
    PointingGame,
    PointingTrials,
    fit_pointing_prior,
    flag_statistics,
    patch_cells,
    patches_kept,
    pointing_game,
    pointing_trials,
    prior_accuracy,
    zone_cells,
)
from .retrieval import (
    DIRECTIONS,
    RetrievalRecall,
    SemanticPrecision,
    retrieval_recall,
    semantic_chance,
    semantic_precision,
    text_groups,
)

__all__ = [
    "DIRECTIONS",
    "GAMES",
    "FalseNegativeFlags",
    "PatchesKept",
    "PointingGame",
    "PointingTrials",
    "RetrievalRecall",
    "SemanticPrecision",
    "fit_pointing_prior",
    "flag_statistics",
    "patch_cells",
    "patches_kept",
    "pointing_game",
    "pointing_trials",
    "prior_accuracy",
    "retrieval_recall",
    "semantic_chance",
    "semantic_precision",
    "text_groups",
    "zone_cells",
]
