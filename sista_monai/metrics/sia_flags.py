"""SIA, the false-negative flags (:func:`flag_statistics`, :class:`FalseNegativeFlags`), scored against the truth.

Of the unpaired report pairs that the report similarity flags (``R_ij ≥ θ``), how many really share their finding
set (precision), how many of the pairs that share it are flagged (recall), against the share of unpaired pairs that
share it (``base_rate``, the precision of flagging at random). The ``abnormal_*`` figures are the same restricted to
the pairs of two abnormal reports by truth, where normal reports, which agree with each other trivially and make up
much of a split, cannot inflate them; ``normal_abnormal_flag_rate`` counts the flags between a normal and an
abnormal report, each of which removes a true negative.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from sista_monai.distributed import world_info
from sista_monai.losses.sia import false_negative_flags
from sista_monai.losses.similarity import (
    REPORT_FINDINGS_KEY,
    REPORT_SIMILARITY_SOURCES,
    ReportSimilarity,
    finding_label_agreement,
    report_features,
)

from .evaluator_output import _output

if TYPE_CHECKING:
    from ignite.metrics import Metric
    from ignite.metrics.metric import reinit__is_reduced
else:
    Metric, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Metric")
    reinit__is_reduced, _ = optional_import(
        "ignite.metrics.metric", IgniteInfo.OPT_IMPORT_VERSION, min_version, "reinit__is_reduced"
    )
idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")

__all__ = ["NO_FINDING_NAMES", "FalseNegativeFlags", "flag_statistics", "no_finding_columns"]

NO_FINDING_NAMES = ("no finding", "normal")
"""Label names (compared in lower case) of columns that say a report has no finding rather than name one: CheXpert's
``No Finding``, IU X-ray's MeSH ``normal``. Such a column is left out when deciding whether a report is normal."""


def no_finding_columns(label_names: Sequence[str] | None) -> tuple[int, ...]:
    """The indices of the :data:`NO_FINDING_NAMES` columns among a datalist's ``label_names`` (none without names)."""
    return tuple(i for i, name in enumerate(label_names or ()) if str(name).strip().lower() in NO_FINDING_NAMES)


def _normal_reports(labels: torch.Tensor, no_finding: Sequence[int] = ()) -> torch.Tensor:
    """``(N,)`` bool: reports with no positive finding (value > 0.5) outside the ``no_finding`` columns."""
    keep = torch.ones(labels.shape[1], dtype=torch.bool, device=labels.device)
    for column in no_finding:
        if not -labels.shape[1] <= int(column) < labels.shape[1]:
            raise ValueError(f"no-finding column {column} is out of range for {labels.shape[1]} label columns")
        keep[int(column)] = False
    return ~(labels[:, keep] > 0.5).any(dim=1)


def _share(count: int, total: int) -> float:
    return count / total if total else float("nan")


def flag_statistics(
    report_features: torch.Tensor,
    labels: torch.Tensor,
    threshold: float,
    source: str = "text_frozen",
    similarity: ReportSimilarity | None = None,
    batch_size: int | None = None,
    no_finding: Sequence[int] = (),
) -> dict[str, float]:
    """SIA false-negative flags over a whole set of reports, scored against finding-set agreement.

    Args:
        report_features: ``(N, F)`` features of the similarity source (frozen/online text embeddings, datalist
            labels, or finding vectors read from the text).
        labels: ``(N, C)`` finding vectors, the truth (two reports agree when their sets of positive findings
            are equal, :func:`~sista_monai.losses.finding_label_agreement`).
        threshold: θ.
        source: the :class:`~sista_monai.losses.ReportSimilarity` source the features come from (ignored when
            ``similarity`` is given).
        similarity: the configured :class:`~sista_monai.losses.ReportSimilarity` (its centring included).
        batch_size: the training batch size ``B`` for ``rows_without_negatives`` (default: ``N``).
        no_finding: columns of ``labels`` that do not name a finding (a ``No Finding`` column,
            :func:`no_finding_columns`): a report is normal when no other column is positive (by default, when
            its whole vector is 0).

    Returns:
        ``flag_rate`` (share of unpaired pairs flagged), ``flag_precision`` (share of flagged pairs that agree; NaN
        when nothing is flagged), ``flag_recall`` (share of agreeing unpaired pairs flagged; NaN when none agree),
        ``base_rate`` (share of unpaired pairs that agree: the precision of random flags), ``flagged_pairs`` and
        ``rows_without_negatives``: the expected share of anchors left with no negative in a batch of ``B``
        drawn from these reports, ``mean_i C(f_i, B-1) / C(N-1, B-1)`` with ``f_i`` the flags of row ``i``.
        ``abnormal_flag_rate``, ``abnormal_flag_precision``, ``abnormal_flag_recall`` and ``abnormal_base_rate``:
        the same four over the unpaired pairs of two abnormal reports (both have a finding), where agreeing means
        the same non-empty finding set; NaN without such pairs. ``normal_abnormal_flag_rate``: the share of the
        pairs of a normal and an abnormal report that are flagged (each such flag removes a true negative).
    """
    n = len(labels)
    if n < 2:
        nan = float("nan")
        return {
            "flag_rate": nan,
            "flag_precision": nan,
            "flag_recall": nan,
            "base_rate": nan,
            "flagged_pairs": 0,
            "rows_without_negatives": nan,
            "abnormal_flag_rate": nan,
            "abnormal_flag_precision": nan,
            "abnormal_flag_recall": nan,
            "abnormal_base_rate": nan,
            "normal_abnormal_flag_rate": nan,
        }
    similarity = similarity if similarity is not None else ReportSimilarity(source, gather_distributed=False)
    gather = similarity.gather_distributed
    similarity.gather_distributed = False
    try:
        sim = similarity(report_features)
    finally:
        similarity.gather_distributed = gather
    agreement = finding_label_agreement(labels, gather_distributed=False)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=labels.device)
    flags = false_negative_flags(sim, threshold)
    agree = agreement & off_diagonal
    n_flags, n_agree = int(flags.sum()), int(agree.sum())
    batch = n if batch_size is None else max(1, min(int(batch_size), n))
    per_row = flags.sum(dim=1).tolist()
    empty_rows = sum(math.comb(f, batch - 1) / math.comb(n - 1, batch - 1) for f in per_row)
    normal = _normal_reports(labels.detach(), no_finding)
    abnormal = off_diagonal & ~normal[:, None] & ~normal[None, :]
    mixed = normal[:, None] ^ normal[None, :]
    abnormal_flags, abnormal_agree = flags & abnormal, agree & abnormal
    n_abnormal_true = int((abnormal_flags & abnormal_agree).sum())
    return {
        "flag_rate": n_flags / int(off_diagonal.sum()),
        "flag_precision": float((flags & agree).sum() / n_flags) if n_flags else float("nan"),
        "flag_recall": float((flags & agree).sum() / n_agree) if n_agree else float("nan"),
        "base_rate": n_agree / int(off_diagonal.sum()),
        "flagged_pairs": n_flags,
        "rows_without_negatives": empty_rows / n,
        "abnormal_flag_rate": _share(int(abnormal_flags.sum()), int(abnormal.sum())),
        "abnormal_flag_precision": _share(n_abnormal_true, int(abnormal_flags.sum())),
        "abnormal_flag_recall": _share(n_abnormal_true, int(abnormal_agree.sum())),
        "abnormal_base_rate": _share(int(abnormal_agree.sum()), int(abnormal.sum())),
        "normal_abnormal_flag_rate": _share(int((flags & mixed).sum()), int(mixed.sum())),
    }


class FalseNegativeFlags(Metric):
    """Ignite metric: one SIA flag statistic (:func:`flag_statistics`) on a whole evaluation split.

    Args:
        threshold: θ of the SIA loss.
        source: report-similarity source (``text_frozen``, ``text_online``, ``labels``, ``findings``).
        report: ``"precision"``, ``"recall"``, ``"rate"``, ``"base_rate"``, ``"rows_without_negatives"``, or
            ``"abnormal_precision"``, ``"abnormal_recall"``, ``"abnormal_rate"``, ``"abnormal_base_rate"`` (the
            same over the pairs that are not normal–normal by truth).
        similarity: the configured :class:`~sista_monai.losses.ReportSimilarity` (its centring included); its
            source must be ``source``.
        batch_size: the training batch size for ``rows_without_negatives``.
        label_names: the names of the ``labels`` columns (the datalist's ``label_names``): a
            :data:`NO_FINDING_NAMES` column (``No Finding``) does not make a report abnormal. Without names a
            report is normal when its whole label vector is 0.
        output_transform: maps the engine output to ``(pred, targets)`` (targets hold ``labels``, and
            ``report_findings`` for the ``findings`` source).
    """

    REPORTS = {
        "precision": "flag_precision",
        "recall": "flag_recall",
        "rate": "flag_rate",
        "base_rate": "base_rate",
        "rows_without_negatives": "rows_without_negatives",
        "abnormal_precision": "abnormal_flag_precision",
        "abnormal_recall": "abnormal_flag_recall",
        "abnormal_rate": "abnormal_flag_rate",
        "abnormal_base_rate": "abnormal_base_rate",
        "normal_abnormal_rate": "normal_abnormal_flag_rate",
    }

    def __init__(
        self,
        threshold: float,
        source: str = "text_frozen",
        report: str = "precision",
        similarity: ReportSimilarity | None = None,
        batch_size: int | None = None,
        label_names: Sequence[str] | None = None,
        output_transform: Callable[[Any], Any] = _output,
        device: str | torch.device = "cpu",
    ) -> None:
        if source not in REPORT_SIMILARITY_SOURCES:
            raise ValueError(f"source must be one of {REPORT_SIMILARITY_SOURCES}, got {source!r}")
        if report not in self.REPORTS:
            raise ValueError(f"report must be one of {tuple(self.REPORTS)}, got {report!r}")
        if similarity is not None and similarity.source != source:
            raise ValueError(f"similarity has source {similarity.source!r}, not {source!r}")
        self.threshold, self.source, self.report = float(threshold), source, report
        self.similarity, self.batch_size = similarity, batch_size
        self.label_names = None if label_names is None else [str(name) for name in label_names]
        self.no_finding = no_finding_columns(self.label_names)
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._features: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    @reinit__is_reduced
    def update(self, output: tuple[Any, dict[str, torch.Tensor]]) -> None:
        pred, targets = output
        labels = targets.get("labels")
        if labels is None:
            raise KeyError("FalseNegativeFlags needs 'labels' in the batch")
        if self.label_names and labels.shape[-1] != len(self.label_names):
            raise ValueError(f"labels have {labels.shape[-1]} columns but label_names has {len(self.label_names)}")
        features = report_features(self.source, pred, labels, findings=targets.get(REPORT_FINDINGS_KEY))
        self._features.append(features.detach().float().to(self._device))
        self._labels.append(labels.detach().float().to(self._device))

    def compute(self) -> float:
        if not self._features:
            return float("nan")
        features, labels = torch.cat(self._features), torch.cat(self._labels)
        if world_info()[1] > 1:
            features, labels = idist.all_gather(features), idist.all_gather(labels)
        stats = flag_statistics(
            features, labels, self.threshold, self.source, self.similarity, self.batch_size, self.no_finding
        )
        return float(stats[self.REPORTS[self.report]])
