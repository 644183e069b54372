"""Metrics that MONAI and Ignite do not already provide: retrieval, grounding, flag statistics, binary
classification at a threshold, Dice/IoU with the SIIM empty-mask rule, detection mAP over an IoU range."""

from __future__ import annotations

from .classification import THRESHOLD_METRICS, binary_classification_metrics, roc_curve
from .counterfactual import CounterfactualGrounding, counterfactual_follow, summarise_follow
from .detection import (
    DETECTION_METRICS,
    MGCA_IOU_RANGE,
    DetectionMAP,
    detection_map,
    detection_map_rule,
    detection_output,
    iou_thresholds,
)
from .grounding import (
    GAMES,
    PointingGame,
    PointingTrials,
    fit_pointing_prior,
    fit_text_pointer,
    patch_cells,
    pointed_patches,
    pointing_game,
    pointing_trials,
    prior_accuracy,
    prior_patches,
    text_pointer_patches,
    training_trials,
    zone_cells,
)
from .pretraining import TARGETS, over_image_free, summarise_test_metrics
from .retrieval import (
    DIRECTIONS,
    RetrievalRecall,
    SemanticPrecision,
    cosine_similarity,
    retrieval_recall,
    semantic_chance,
    semantic_precision,
    text_groups,
    top_k_matches,
)
from .segmentation import EMPTY_MASK_RULE, dice_iou, segmentation_summary
from .sia_flags import NO_FINDING_NAMES, FalseNegativeFlags, flag_statistics, no_finding_columns
from .sparsity import PatchesKept, patches_kept

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
    "fit_text_pointer",
    "flag_statistics",
    "no_finding_columns",
    "NO_FINDING_NAMES",
    "pointed_patches",
    "prior_patches",
    "text_pointer_patches",
    "training_trials",
    "CounterfactualGrounding",
    "counterfactual_follow",
    "summarise_follow",
    "over_image_free",
    "patch_cells",
    "patches_kept",
    "pointing_game",
    "pointing_trials",
    "prior_accuracy",
    "retrieval_recall",
    "semantic_chance",
    "semantic_precision",
    "text_groups",
    "cosine_similarity",
    "top_k_matches",
    "zone_cells",
    "THRESHOLD_METRICS",
    "binary_classification_metrics",
    "roc_curve",
    "DETECTION_METRICS",
    "MGCA_IOU_RANGE",
    "DetectionMAP",
    "detection_map",
    "detection_map_rule",
    "detection_output",
    "iou_thresholds",
    "EMPTY_MASK_RULE",
    "dice_iou",
    "segmentation_summary",
    "TARGETS",
    "summarise_test_metrics",
]
