"""Handlers reacting to SISTA engine events: logging, seeding, checkpoints, export, heat maps."""

from __future__ import annotations

from sista_monai.atomic_files import TEMPORARY_SUFFIX, stale_temporary_files, write_atomically

from .export import SIDECAR_FORMAT, ImageEncoderExporter, atomic_write_bytes, export_image_encoder
from .heatmaps import AlignmentHeatmaps
from .training import (
    LOSS_TERM_KEYS,
    AtomicCheckpointSaver,
    BestModelSaver,
    EpochSeeder,
    MainRankTensorBoardStatsHandler,
    NonFiniteWeightsError,
    RandomStates,
    WeightsOnlyCheckpointLoader,
    load_checkpoint,
    load_failure_reason,
    load_network_weights,
    load_weights_only,
    loss_terms,
    nonfinite_entries,
    refuse_nonfinite,
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
    "NonFiniteWeightsError",
    "RandomStates",
    "TEMPORARY_SUFFIX",
    "WeightsOnlyCheckpointLoader",
    "atomic_write_bytes",
    "export_image_encoder",
    "load_checkpoint",
    "load_failure_reason",
    "load_network_weights",
    "load_weights_only",
    "loss_terms",
    "nonfinite_entries",
    "refuse_nonfinite",
    "stale_temporary_files",
    "write_atomically",
]
