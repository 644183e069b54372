"""Image–report retrieval: exact-pair Recall@K and semantic precision@K, as functions and Ignite metrics.

* **Recall@K** (:func:`retrieval_recall`): for every image of the evaluation split, rank all reports of the split
  by cosine similarity; a hit at K when the image's own report is among the top K (and the same for
  report → image). Chance level is ``K / N``.

  *Ties are scored fairly*: the true candidate's rank is the expectation under a random order of the candidates
  tied with it, so a query with ``g`` candidates strictly better and ``e`` tied scores
  ``min(1, max(0, (K - g) / (e + 1)))``. Candidates whose report *text* is identical to the pair's report (given as
  ``groups``: 19 of the 88 demo test reports share their text with another) are always tied with the true one:
  nothing can tell two identical reports apart, so ranking one above the other is neither a hit nor a miss,
  and a model is not penalised for placing similar studies together, which is what SIA is for. A constant
  embedding scores exactly chance.
* **Semantic precision@K** (:func:`semantic_precision`): of the top K reports retrieved for an image, the share
  whose finding set equals the image's (two normal studies agree; a right and a left pneumothorax agree). Ties at
  the K-th place are scored by expectation as above. Its chance level is the mean share of the split's reports
  that share the query's finding set.
* **Ranking** (:func:`cosine_similarity`, :func:`top_k_matches`): the similarities and the top-k files of the
  retrieval bundle's retrieve mode (a stable sort: equal scores keep the candidates' order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from monai.utils import IgniteInfo, min_version, optional_import

from sista_monai.distributed import world_info

if TYPE_CHECKING:
    from ignite.metrics import Metric
    from ignite.metrics.metric import reinit__is_reduced
else:
    Metric, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Metric")
    reinit__is_reduced, _ = optional_import(
        "ignite.metrics.metric", IgniteInfo.OPT_IMPORT_VERSION, min_version, "reinit__is_reduced"
    )
idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")

__all__ = [
    "DIRECTIONS",
    "RetrievalRecall",
    "SemanticPrecision",
    "cosine_similarity",
    "retrieval_recall",
    "semantic_chance",
    "semantic_precision",
    "text_groups",
    "top_k_matches",
]

DIRECTIONS = ("image_to_report", "report_to_image")


def cosine_similarity(queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``(Q, C)`` cosine similarities of ``(Q, D)`` queries and ``(C, D)`` candidates (normalised here)."""
    return F.normalize(queries.float(), dim=1) @ F.normalize(candidates.float(), dim=1).T


def top_k_matches(similarity: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best candidates of every query: ``(scores, indices)``, each ``(Q, min(k, C))``, best first.

    Args:
        similarity: ``(Q, C)`` query–candidate scores.
        k: how many candidates to keep (at least 1; all of them when ``k >= C``).

    Returns:
        The scores and the candidate indices, sorted by decreasing score; equal scores keep the candidates' order
        (a stable sort), so the lower index comes first.

    Raises:
        ValueError: ``similarity`` is not 2-D or ``k < 1``.
    """
    if similarity.ndim != 2:
        raise ValueError(f"similarity must be (queries, candidates), got shape {tuple(similarity.shape)}")
    if int(k) < 1:
        raise ValueError(f"top_k must be at least 1, got {k}")
    scores, indices = torch.sort(similarity, dim=1, descending=True, stable=True)
    keep = min(int(k), similarity.shape[1])
    return scores[:, :keep], indices[:, :keep]


def _similarity(image_emb: torch.Tensor, text_emb: torch.Tensor, direction: str) -> torch.Tensor:
    if image_emb.ndim != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(
            f"image_emb and text_emb must both be (N, D), got {tuple(image_emb.shape)} and {tuple(text_emb.shape)}"
        )
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    queries, candidates = (image_emb, text_emb) if direction == "image_to_report" else (text_emb, image_emb)
    return cosine_similarity(queries, candidates)


def text_groups(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``(N,)`` group index of each report: equal for reports with identical token ids (identical texts).

    Args:
        input_ids: ``(N, T)`` token ids.
        attention_mask: ``(N, T)``; padding is ignored when given.
    """
    ids = input_ids.long()
    if attention_mask is not None:
        ids = ids.masked_fill(~attention_mask.bool(), -1)
    return torch.unique(ids, dim=0, return_inverse=True)[1]


def retrieval_recall(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    direction: str = "image_to_report",
    groups: torch.Tensor | None = None,
) -> dict[int, float]:
    """Exact-pair Recall@K of paired embeddings (row ``i`` of both is a pair), ties scored fairly.

    Args:
        image_emb: ``(N, D)`` image embeddings (normalised here).
        text_emb: ``(N, D)`` report embeddings.
        ks: the K values.
        direction: ``"image_to_report"`` or ``"report_to_image"``.
        groups: optional ``(N,)`` report-text groups (:func:`text_groups`): candidates in the true pair's group
            are tied with it.

    Returns:
        ``{K: recall}`` with recall in ``[0, 1]``.

    Raises:
        ValueError: mismatched shapes or an unknown direction.
    """
    sim = _similarity(image_emb, text_emb, direction)
    n = sim.shape[0]
    own = sim.diagonal().unsqueeze(1)
    others = ~torch.eye(n, dtype=torch.bool, device=sim.device)
    same = torch.zeros_like(others) if groups is None else groups.view(-1, 1) == groups.view(1, -1)
    tied = ((sim == own) | same) & others
    better = (sim > own) & ~same
    g, e = better.sum(dim=1).double(), tied.sum(dim=1).double()
    return {int(k): float(((k - g) / (e + 1)).clamp(0.0, 1.0).mean()) for k in ks}


def _same_findings(labels: torch.Tensor) -> torch.Tensor:
    positive = labels > 0.5
    return (positive[:, None, :] == positive[None, :, :]).all(dim=-1)


def semantic_precision(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    labels: torch.Tensor,
    k: int = 5,
    direction: str = "image_to_report",
) -> float:
    """Mean share of the top ``k`` retrieved candidates whose finding set equals the query's.

    Args:
        image_emb: ``(N, D)`` image embeddings.
        text_emb: ``(N, D)`` report embeddings.
        labels: ``(N, C)`` finding vectors (positive when > 0.5).
        k: K (``min(k, N)`` is used).
        direction: ``"image_to_report"`` or ``"report_to_image"``.

    Returns:
        Precision@K in ``[0, 1]``, ties at the K-th place counted by their expected share.
    """
    sim = _similarity(image_emb, text_emb, direction).double()
    k = min(int(k), sim.shape[1])
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    relevant = _same_findings(labels).double()
    kth = sim.topk(k, dim=1).values[:, -1:]
    above, at = sim > kth, sim == kth
    slots = k - above.sum(dim=1, keepdim=True)
    hits = (relevant * above).sum(dim=1, keepdim=True) + (relevant * at).sum(dim=1, keepdim=True) * slots / at.sum(
        dim=1, keepdim=True
    )
    return float((hits / k).mean())


def semantic_chance(labels: torch.Tensor) -> float:
    """Precision@K of a random ranking: the mean share of the split's reports sharing the query's finding set."""
    return float(_same_findings(labels).double().mean())


def _sista_embeddings(
    output: Any,
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor | None] | None]:
    pred = output["pred"] if isinstance(output, dict) else output
    label = output.get("label") if isinstance(output, dict) else None
    groups = None
    if isinstance(label, dict) and label.get("input_ids") is not None:
        groups = (label["input_ids"], label.get("attention_mask"))
    return pred.image_emb, pred.text_emb, groups


class _Embeddings(Metric):
    """Accumulates image and report embeddings (and token ids or labels) over an epoch, gathered across ranks."""

    def __init__(self, output_transform: Callable[[Any], Any], device: str | torch.device) -> None:
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._parts: list[list[torch.Tensor]] = []

    def _add(self, *tensors: torch.Tensor) -> None:
        row = [t.detach().to(self._device) for t in tensors]
        self._parts.append(row)

    def _gathered(self) -> list[torch.Tensor]:
        if not self._parts:
            raise RuntimeError(f"{type(self).__name__} needs at least one batch before compute()")
        columns = [torch.cat(column) for column in zip(*self._parts, strict=True)]
        if world_info()[1] > 1:
            columns = [idist.all_gather(c) for c in columns]
        return columns


class RetrievalRecall(_Embeddings):
    """Ignite metric: exact-pair Recall@``k`` over a whole evaluation epoch (:func:`retrieval_recall`).

    Identical report texts are tied when the evaluator's label holds ``input_ids`` (and ``attention_mask``), as
    :class:`~sista_monai.engines.SISTAPrepareBatch` provides.

    Args:
        k: the K of Recall@K.
        direction: ``"image_to_report"`` or ``"report_to_image"``.
        output_transform: maps the engine output to ``(image_emb, text_emb)`` or ``(image_emb, text_emb,
            (input_ids, attention_mask) or None)``; the default reads the SISTA model output.
        device: where the accumulated embeddings live.
    """

    def __init__(
        self,
        k: int = 5,
        direction: str = "image_to_report",
        output_transform: Callable[[Any], Any] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        self.k = int(k)
        self.direction = direction
        super().__init__(output_transform or _sista_embeddings, device)

    @reinit__is_reduced
    def update(self, output: tuple[Any, ...]) -> None:
        image_emb, text_emb, *rest = output
        tokens = rest[0] if rest else None
        if tokens is None:
            self._add(image_emb.float(), text_emb.float())
            return
        input_ids, attention_mask = tokens
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        self._add(image_emb.float(), text_emb.float(), input_ids.long(), mask.long())

    def compute(self) -> float:
        columns = self._gathered()
        groups = text_groups(columns[2], columns[3]) if len(columns) == 4 else None
        return retrieval_recall(columns[0], columns[1], (self.k,), self.direction, groups)[self.k]


def _semantic_output(output: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pred = output["pred"] if isinstance(output, dict) else output
    label = output.get("label") if isinstance(output, dict) else None
    if not isinstance(label, dict) or label.get("labels") is None:
        raise KeyError("SemanticPrecision needs finding 'labels' in the batch")
    return pred.image_emb, pred.text_emb, label["labels"]


class SemanticPrecision(_Embeddings):
    """Ignite metric: semantic precision@``k`` (:func:`semantic_precision`) or its ``"chance"`` level.

    Args:
        k: K.
        direction: ``"image_to_report"`` or ``"report_to_image"``.
        report: ``"precision"`` or ``"chance"``.
        output_transform: maps the engine output to ``(image_emb, text_emb, labels)``.
    """

    def __init__(
        self,
        k: int = 5,
        direction: str = "image_to_report",
        report: str = "precision",
        output_transform: Callable[[Any], Any] = _semantic_output,
        device: str | torch.device = "cpu",
    ) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if report not in ("precision", "chance"):
            raise ValueError(f"report must be 'precision' or 'chance', got {report!r}")
        self.k, self.direction, self.report = int(k), direction, report
        super().__init__(output_transform, device)

    @reinit__is_reduced
    def update(self, output: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
        image_emb, text_emb, labels = output
        self._add(image_emb.float(), text_emb.float(), labels.float())

    def compute(self) -> float:
        images, texts, labels = self._gathered()
        if self.report == "chance":
            return semantic_chance(labels)
        return semantic_precision(images, texts, labels, self.k, self.direction)
