"""Report–report similarity used by SIA to find false negatives (METHOD.md §1).

Two studies whose reports say the same thing ("No acute cardiopulmonary process.") should not be pushed apart
by the contrastive loss. :class:`ReportSimilarity` turns per-report vectors into the similarity matrix ``R``
that :class:`~sista_monai.losses.sia.SemanticInstanceAlignmentLoss` thresholds. It owns no encoder: the model
(text sources), the datalist (``labels``) or the rule labeler run on the report text
(:class:`~sista_monai.transforms.ReportFindingsd`, ``findings``) passes the vectors in.

References:
    Wang, Zifeng, et al. "MedCLIP: Contrastive Learning from Unpaired Medical Images and Text." EMNLP 2022
    (https://arxiv.org/abs/2210.10163): report/label semantic similarity as soft targets.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from sista_monai.losses.distributed import gather_no_grad

__all__ = [
    "report_center",
    "ReportSimilarity",
    "finding_label_agreement",
    "fit_report_center",
    "report_features",
    "REPORT_SIMILARITY_SOURCES",
    "FINDING_VECTOR_SOURCES",
    "REPORT_FINDINGS_KEY",
]

REPORT_SIMILARITY_SOURCES = ("text_frozen", "text_online", "labels", "findings")

FINDING_VECTOR_SOURCES = ("labels", "findings")
"""The sources whose report features are finding vectors: compared with a "no finding" column, never centred."""

REPORT_FINDINGS_KEY = "report_findings"
"""The batch key of the finding vectors that :class:`~sista_monai.transforms.ReportFindingsd` reads from the text."""


def report_features(
    source: str, output: Any, labels: torch.Tensor | None = None, findings: torch.Tensor | None = None
) -> torch.Tensor:
    """The per-report vectors that :class:`ReportSimilarity` compares for ``source`` (METHOD.md §1).

    The one place where a similarity source becomes features: the SISTA trainer and the false-negative flag
    metric both call it.

    Args:
        source: ``"text_frozen"`` (the frozen text copy's pooled features), ``"text_online"`` (the current report
            embeddings ``t``), ``"labels"`` (the datalist's finding vectors) or ``"findings"`` (the per-report
            finding vectors read from the report text by the rule labeler,
            :class:`~sista_monai.transforms.ReportFindingsd`).
        output: the model's output, a :class:`~sista_monai.networks.SISTAOutput` (``text_emb`` and
            ``frozen_text_features`` are read).
        labels: ``(B, C)`` finding vectors of the batch; needed by ``"labels"`` only.
        findings: ``(B, K)`` finding vectors read from the text (the batch's ``report_findings``); needed by
            ``"findings"`` only.

    Returns:
        ``(B, F)`` report features (as they are: no copy, dtype or gradient change).

    Raises:
        ValueError: an unknown ``source``; ``"text_frozen"`` with a model that keeps no frozen copy;
            ``"labels"`` without ``labels``; ``"findings"`` without ``findings``.
    """
    if source == "text_frozen":
        if output.frozen_text_features is None:
            raise ValueError("report similarity source 'text_frozen' needs SISTAModel(keep_frozen_text_copy=True)")
        return output.frozen_text_features
    if source == "labels":
        if labels is None:
            raise ValueError("report similarity source 'labels' needs a 'labels' entry in every batch item")
        return labels
    if source == "findings":
        if findings is None:
            raise ValueError(
                f"report similarity source 'findings' needs a {REPORT_FINDINGS_KEY!r} entry in every batch item: "
                "run sista_monai.transforms.ReportFindingsd on the cleaned report text in the preprocessing and "
                f"keep {REPORT_FINDINGS_KEY!r} in the batch"
            )
        return findings
    if source == "text_online":
        return output.text_emb
    raise ValueError(f"source must be one of {REPORT_SIMILARITY_SOURCES}, got {source!r}.")


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
      labels before calling), as MedCLIP does;
    - ``"findings"``: per-report finding vectors read from the report text by the negation- and uncertainty-aware
      rule labeler (:class:`~sista_monai.transforms.ReportFindingsd`: 1 stated, ``uncertain`` for an uncertain
      mention, 0 negated or absent), compared exactly as ``"labels"``.

    For the two finding-vector sources, all-zero vectors (a report with no finding) have no direction, so their
    cosine is undefined. The rule used: a "no finding" indicator column, equal to 1 exactly when every finding is
    0, is appended before the cosine. Hence two reports without findings have similarity 1 (they agree: both normal), a report without
    findings and one with findings have similarity 0, and two reports with findings get their plain cosine.
    Every report therefore has similarity 1 with itself. For the text sources a zero vector (which a text
    encoder does not produce) gets similarity 0 with everything.

    The result has no gradient. When ``torch.distributed`` is initialised with more than one process and
    ``gather_distributed`` is true, the columns cover the global batch in rank order (``(B, B * world)``),
    matching the logits layout of the SIA loss.

    **Centring** (``center``, text sources): pooled transformer features are anisotropic, every report sharing
    one dominant direction (cosines of ≥ 0.9 between almost any two reports with Bio_ClinicalBERT, ≥ 0.98 with
    the demo's small encoder), so a fixed θ on raw cosines flags nearly every pair. Subtracting the mean feature
    of the training reports (:func:`fit_report_center`) before the cosine removes that direction and leaves the
    directions in which reports differ; θ is then chosen on validation pairs. A fixed centre (not the batch
    mean) keeps ``R_ij`` independent of which other reports share the batch.

    Args:
        source: one of ``"text_frozen"``, ``"text_online"``, ``"labels"``, ``"findings"``.
        gather_distributed: gather the column vectors from every rank when running distributed.
        eps: lower bound on vector norms in the cosine.
        center: ``(F,)`` vector subtracted from text features before the cosine (``None``: raw cosine). Not
            allowed with ``"labels"`` or ``"findings"``.

    Raises:
        ValueError: when ``source`` is not one of the supported sources, or ``center`` is given for a finding-vector
            source or is not 1-D.
    """

    center: torch.Tensor | None

    def __init__(
        self,
        source: str = "text_frozen",
        gather_distributed: bool = True,
        eps: float = 1e-8,
        center: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if source not in REPORT_SIMILARITY_SOURCES:
            raise ValueError(f"source must be one of {REPORT_SIMILARITY_SOURCES}, got {source!r}.")
        if center is not None:
            if source in FINDING_VECTOR_SOURCES:
                raise ValueError(f"center applies to the text sources, not to {source!r}.")
            center = torch.as_tensor(center, dtype=torch.float32)
            if center.ndim != 1:
                raise ValueError(f"center must be a 1-D feature vector, got shape {tuple(center.shape)}.")
        self.source = source
        self.gather_distributed = gather_distributed
        self.eps = eps
        self.register_buffer("center", center, persistent=False)

    def forward(self, report_features: torch.Tensor) -> torch.Tensor:
        """
        Args:
            report_features: ``(B, F)``: frozen-encoder embeddings, online report embeddings, or finding vectors
                (datalist labels or read from the text), depending on ``source``.

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
            if self.source in FINDING_VECTOR_SOURCES:
                x = _with_no_finding_column(x)
            elif self.center is not None:
                if x.shape[1] != self.center.shape[0]:
                    raise ValueError(
                        f"report_features have {x.shape[1]} features but center has {self.center.shape[0]}."
                    )
                x = x.float() - self.center.to(x.device)
            x = F.normalize(x, dim=1, eps=self.eps)
            columns = gather_no_grad(x) if self.gather_distributed else x
            return x @ columns.T

    def extra_repr(self) -> str:
        centred = self.center is not None
        return f"source={self.source!r}, gather_distributed={self.gather_distributed}, centred={centred}"


def fit_report_center(
    network: nn.Module, data_loader: Any, source: str = "text_frozen", device: Any = None
) -> torch.Tensor:
    """The mean report feature of a split (the training reports), the centre of :class:`ReportSimilarity`.

    Args:
        network: a :class:`~sista_monai.networks.SISTAModel` (or its DDP wrapper); ``"text_frozen"`` reads its frozen
            text copy, ``"text_online"`` its current report embeddings.
        data_loader: batches with ``input_ids``, ``attention_mask`` and optionally ``word_mask`` (no image needed).
        source: ``"text_frozen"`` or ``"text_online"``.
        device: where to run (default: the network's device).

    Returns:
        ``(F,)`` float32 mean feature, on the CPU.

    Raises:
        ValueError: a finding-vector source (``"labels"``, ``"findings"``), a frozen source without a frozen copy,
            or an empty loader.
    """
    if source not in ("text_frozen", "text_online"):
        raise ValueError(f"a centre is fitted for the text sources, got {source!r}.")
    # a SISTAModel (or its DDP wrapper); losses do not import networks, so its encoders are reached by name
    model: Any = getattr(network, "module", network)
    if source == "text_frozen" and getattr(model, "frozen_text_encoder", None) is None:
        raise ValueError("source 'text_frozen' needs SISTAModel(keep_frozen_text_copy=True)")
    device = device if device is not None else next(model.parameters()).device
    total, count = None, 0
    was_training = model.training
    model.eval()
    # iterating a DataLoader draws its base seed from the global generator: keep the training's random stream as is
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        for batch in data_loader:
            ids = torch.as_tensor(batch["input_ids"]).to(device)
            mask = torch.as_tensor(batch["attention_mask"]).to(device)
            if source == "text_frozen":
                features = model.frozen_text_encoder(ids, mask).global_features
            else:
                features = model.encode_text(ids, mask)[0]
            features = features.float().sum(dim=0).cpu()
            total = features if total is None else total + features
            count += ids.shape[0]
    model.train(was_training)
    if total is None:
        raise ValueError("fit_report_center got an empty data loader")
    return total / count


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


def report_center(
    network: nn.Module, data_loader: Any, source: str = "text_frozen", device: Any = None
) -> torch.Tensor | None:
    """The centre the pretraining bundle gives :class:`ReportSimilarity` for ``source``.

    ``"text_frozen"``: :func:`fit_report_center` on the training reports (the frozen features do not move, so the
    centre fitted once stays right); ``"text_online"``, ``"labels"`` and ``"findings"``: ``None`` (online features
    move during training, and finding vectors are compared as they are).
    """
    if source != "text_frozen":
        return None
    return fit_report_center(network, data_loader, source, device)
