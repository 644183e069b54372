"""Handlers reacting to engine events: the epoch-summary console line, loss-term logging, seeding, checkpoints,
encoder export, heat maps, evaluation reports and per-image prediction files.

Files are written through :mod:`sista_monai.io`; ranks come from :mod:`sista_monai.distributed`.
"""

from __future__ import annotations

from .console import EpochSummaryStatsHandler
from .export import ImageEncoderExporter
from .grounding import GroundingWriter, input_to_original, original_heatmap, patch_box
from .heatmaps import AlignmentHeatmaps
from .predictions import ClassificationJSONWriter, DetectionJSONWriter, EmbeddingJSONWriter
from .pretrain_inference import ImageEmbeddingWriter, WordAlignmentWriter
from .reports import (
    ClassificationReport,
    DetectionReport,
    EvaluationReport,
    PretrainingReport,
    SegmentationReport,
    write_test_report,
)
from .retrieval import RetrievalReport, RetrievalWriter
from .training import (
    LOSS_TERM_KEYS,
    AtomicCheckpointSaver,
    BestModelSaver,
    EpochSeeder,
    FinalModelFallback,
    MainRankTensorBoardStatsHandler,
    RandomStates,
    WeightsOnlyCheckpointLoader,
    load_checkpoint,
    loss_terms,
)
from .zero_shot import BOOTSTRAP_RESAMPLES, ZERO_SHOT_CSV, ZeroShotEvaluation, ZeroShotWriter, bootstrap_auroc

__all__ = [
    "LOSS_TERM_KEYS",
    "AlignmentHeatmaps",
    "AtomicCheckpointSaver",
    "BestModelSaver",
    "EpochSeeder",
    "EpochSummaryStatsHandler",
    "FinalModelFallback",
    "ImageEmbeddingWriter",
    "ImageEncoderExporter",
    "MainRankTensorBoardStatsHandler",
    "RandomStates",
    "WeightsOnlyCheckpointLoader",
    "load_checkpoint",
    "loss_terms",
    "ClassificationJSONWriter",
    "EmbeddingJSONWriter",
    "DetectionJSONWriter",
    "WordAlignmentWriter",
    "ClassificationReport",
    "SegmentationReport",
    "DetectionReport",
    "EvaluationReport",
    "PretrainingReport",
    "write_test_report",
    "BOOTSTRAP_RESAMPLES",
    "ZERO_SHOT_CSV",
    "ZeroShotEvaluation",
    "ZeroShotWriter",
    "bootstrap_auroc",
    "GroundingWriter",
    "input_to_original",
    "original_heatmap",
    "patch_box",
    "RetrievalReport",
    "RetrievalWriter",
]
