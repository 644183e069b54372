"""SISTA losses: semantics-aware instance alignment (SIA), sparse token alignment (STA), their sum, and the
report–report similarity and cross-rank gathering they rely on (METHOD.md §1–§3); the class weight of the
classification bundle's loss."""

from __future__ import annotations

from sista_monai.losses.classification import balanced_pos_weight, positive_class_weight
from sista_monai.losses.distributed import gather_no_grad, gather_with_grad
from sista_monai.losses.sia import SIA_MODES, SemanticInstanceAlignmentLoss, false_negative_flags
from sista_monai.losses.similarity import (
    FINDING_VECTOR_SOURCES,
    REPORT_FINDINGS_KEY,
    REPORT_SIMILARITY_SOURCES,
    ReportSimilarity,
    finding_label_agreement,
    fit_report_center,
    report_center,
    report_features,
)
from sista_monai.losses.sista import SISTALoss
from sista_monai.losses.sta import STA_CONTRASTS, SparseTokenAlignmentLoss, alignment_weights, grouping_weights

__all__ = [
    "FINDING_VECTOR_SOURCES",
    "REPORT_FINDINGS_KEY",
    "REPORT_SIMILARITY_SOURCES",
    "SIA_MODES",
    "STA_CONTRASTS",
    "ReportSimilarity",
    "SISTALoss",
    "SemanticInstanceAlignmentLoss",
    "SparseTokenAlignmentLoss",
    "alignment_weights",
    "grouping_weights",
    "false_negative_flags",
    "finding_label_agreement",
    "fit_report_center",
    "report_center",
    "gather_no_grad",
    "gather_with_grad",
    "positive_class_weight",
    "balanced_pos_weight",
    "report_features",
]
