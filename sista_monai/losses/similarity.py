"""Report–report similarity used by SIA to find false negatives (METHOD.md §1).

Two studies whose reports say the same thing ("No acute cardiopulmonary process.") should not be pushed apart
by the contrastive loss. :class:`ReportSimilarity` turns per-report vectors into the similarity matrix ``R``
that :class:`~sista_monai.losses.sia.SemanticInstanceAlignmentLoss` thresholds. It owns no encoder: the model
passes the vectors in.

References:
    Wang, Zifeng, et al. "MedCLIP: Contrastive Learning from Unpaired Medical Images and Text." EMNLP 2022
    (https://arxiv.org/abs/2210.10163): report/label semantic similarity as soft targets.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from sista_monai.losses.distributed import gather_no_grad

__all__ = ["ReportSimilarity", "finding_label_agreement", "REPORT_SIMILARITY_SOURCES"]

REPORT_SIMILARITY_SOURCES = ("text_frozen", "text_online", "labels")


def _with_no_finding_column(labels: torch.Tensor) -> torch.Tensor:
    """Append a "no finding" indicator column that is 1 exactly where a row is all zero."""
    no_finding = (labels == 0).all(dim=1, keepdim=True).to(labels.dtype)
    return torch.cat([labels, no_finding], dim=1)


class ReportSimilarity(nn.Module):
    """Cosine similarity between the reports of the local batch and the reports of the global batch.

    Sources (``source``), as in METHOD.md §1:

    - ``"text_frozen"``: pooled embeddings of the report from a frozen copy of the text encoder taken before
      training (the model computes them and passes them in);
    - ``"text_online"``: the current report embeddings ``t`` (detached here);
    - ``"labels"``: per-report finding vectors (e.g. CheXpert-style labels binarised to {0, 1}; map uncertain
      labels before calling), as MedCLIP does.

    All-zero label vectors (a report with no finding) have no direction, so their cosine is undefined. The
    rule used: a "no finding" indicator column, equal to 1 exactly when every finding is 0, is appended before
    the cosine. Hence two reports without findings have similarity 1 (they agree: both normal), a report without
    findings and one with findings have similarity 0, and two reports with findings get their plain cosine.
    Every report therefore has similarity 1 with itself. For the text sources a zero vector (which a text
    encoder does not produce) gets similarity 0 with everything.

    The result has no gradient. When ``torch.distributed`` is initialised with more than one process and
    ``gather_distributed`` is true, the columns cover the global batch in rank order (``(B, B * world)``),
    matching the logits layout of the SIA loss.

    Args:
        source: one of ``"text_frozen"``, ``"text_online"``, ``"labels"``.
        gather_distributed: gather the column vectors from every rank when running distributed.
        eps: lower bound on vector norms in the cosine.

    Raises:
        ValueError: when ``source`` is not one of the supported sources.
    """

    def __init__(self, source: str = "text_frozen", gather_distributed: bool = True, eps: float = 1e-8) -> None:
        super().__init__()
        if source not in REPORT_SIMILARITY_SOURCES:
            raise ValueError(f"source must be one of {REPORT_SIMILARITY_SOURCES}, got {source!r}.")
        self.source = source
        self.gather_distributed = gather_distributed
        self.eps = eps

    def forward(self, report_features: torch.Tensor) -> torch.Tensor:
        """
        Args:
            report_features: ``(B, F)``: frozen-encoder embeddings, online report embeddings, or finding label
                vectors, depending on ``source``.

        Returns:
            ``(B, B)`` similarity matrix (``(B, B * world)`` when distributed), detached, in ``[-1, 1]``.

        Raises:
            ValueError: when ``report_features`` is not 2-D or is empty.
        """
        if report_features.ndim != 2:
            raise ValueError(
                f"report_features must have shape (B, F), got {tuple(report_features.shape)} "
                f"for source {self.source!r}."
            )
        if report_features.shape[0] == 0 or report_features.shape[1] == 0:
            raise ValueError(f"report_features must be non-empty, got shape {tuple(report_features.shape)}.")
        with torch.no_grad():
            x = report_features.detach()
            if not torch.is_floating_point(x):
                x = x.float()
            if self.source == "labels":
                x = _with_no_finding_column(x)
            x = F.normalize(x, dim=1, eps=self.eps)
            columns = gather_no_grad(x) if self.gather_distributed else x
            return x @ columns.T

    def extra_repr(self) -> str:
        return f"source={self.source!r}, gather_distributed={self.gather_distributed}"


def finding_label_agreement(labels: torch.Tensor, gather_distributed: bool = True) -> torch.Tensor:
    """Pairs of reports with identical binarised finding vectors, the reference for the SIA flag precision.

    Args:
        labels: ``(B, C)`` finding vectors; a value is a positive finding when it is greater than 0.5.
        gather_distributed: compare against the labels of the global batch when running distributed.

    Returns:
        ``(B, B)`` boolean matrix (``(B, B * world)`` when distributed): ``True`` where two reports have the same
        set of positive findings (two reports without findings agree).

    Raises:
        ValueError: when ``labels`` is not 2-D.
    """
    if labels.ndim != 2:
        raise ValueError(f"labels must have shape (B, C), got {tuple(labels.shape)}.")
    positive = labels.detach() > 0.5
    columns = gather_no_grad(positive.to(torch.uint8)).bool() if gather_distributed else positive
    return (positive[:, None, :] == columns[None, :, :]).all(dim=-1)
