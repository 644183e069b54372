"""Handlers reacting to SISTA engine events: logging, seeding, checkpoints, export, heat maps."""

from __future__ import annotations

from .export import SIDECAR_FORMAT, ImageEncoderExporter, atomic_write_bytes, export_image_encoder
from .heatmaps import AlignmentHeatmaps
from .training import (
    LOSS_TERM_KEYS,
    AtomicCheckpointSaver,
    MainRankTensorBoardStatsHandler,
    BestModelSaver,
    EpochSeeder,
    RandomStates,
    load_checkpoint,
    load_network_weights,
    load_weights_only,
    loss_terms,
)

__all__ = [
    "SIDECAR_FORMAT",
    "LOSS_TERM_KEYS",
    "AlignmentHeatmaps",
    "AtomicCheckpointSaver",
    "BestModelSaver",
    "EpochSeeder",
    "ImageEncoderExporter",
    "MainRankTensorBoardStatsHandler",
    "RandomStates",
    "atomic_write_bytes",
    "export_image_encoder",
    "load_checkpoint",
    "load_network_weights",
    "load_weights_only",
    "loss_terms",
]
