"""Image–report retrieval Recall@K, as a function and as an Ignite metric.

Retrieval is the standard protocol of image–text pretraining: for every image of the evaluation split, rank
all reports of the split by cosine similarity; a hit at K when the image's own report is among the top K
(and the same for report → image). Chance level is ``K / N``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.utils import IgniteInfo, min_version, optional_import

Metric, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Metric")
reinit__is_reduced, _ = optional_import("ignite.metrics.metric", IgniteInfo.OPT_IMPORT_VERSION, min_version, "reinit__is_reduced")
idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")

__all__ = ["DIRECTIONS", "retrieval_recall", "RetrievalRecall"]

DIRECTIONS = ("image_to_report", "report_to_image")


def retrieval_recall(
    image_emb: torch.Tensor, text_emb: torch.Tensor, ks: Sequence[int] = (1, 5, 10), direction: str = "image_to_report"
) -> dict[int, float]:
    """Recall@K of paired embeddings (row ``i`` of both is a pair).

    Ties are broken against the query (a tied wrong candidate ranks first), so a constant embedding scores
    chance, not 1.

    Args:
        image_emb: ``(N, D)`` image embeddings (normalised here).
        text_emb: ``(N, D)`` report embeddings.
        ks: the K values.
        direction: ``"image_to_report"`` or ``"report_to_image"``.

    Returns:
        ``{K: recall}`` with recall in ``[0, 1]``.

    Raises:
        ValueError: mismatched shapes or an unknown direction.
    """
    if image_emb.ndim != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(f"image_emb and text_emb must both be (N, D), got {tuple(image_emb.shape)} and {tuple(text_emb.shape)}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    queries, candidates = (image_emb, text_emb) if direction == "image_to_report" else (text_emb, image_emb)
    sim = F.normalize(queries.float(), dim=1) @ F.normalize(candidates.float(), dim=1).T
    own = sim.diagonal().unsqueeze(1)
    rank = (sim >= own).sum(dim=1) - 1  # other candidates scoring at least as high as the true one
    return {int(k): float((rank < k).float().mean()) for k in ks}


class RetrievalRecall(Metric):
    """Ignite metric: Recall@``k`` over a whole evaluation epoch, gathered across processes.

    Args:
        k: the K of Recall@K.
        direction: ``"image_to_report"`` or ``"report_to_image"``.
        output_transform: maps the engine output to ``(image_emb, text_emb)``; the default reads the SISTA
            model output from ``output["pred"]``.
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
        super().__init__(output_transform=output_transform or _sista_embeddings, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._images: list[torch.Tensor] = []
        self._texts: list[torch.Tensor] = []

    @reinit__is_reduced
    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        image_emb, text_emb = output
        self._images.append(image_emb.detach().float().to(self._device))
        self._texts.append(text_emb.detach().float().to(self._device))

    def compute(self) -> float:
        if not self._images:
            raise RuntimeError("RetrievalRecall needs at least one batch before compute()")
        images, texts = torch.cat(self._images), torch.cat(self._texts)
        if idist.get_world_size() > 1:
            images, texts = idist.all_gather(images), idist.all_gather(texts)
        return retrieval_recall(images, texts, (self.k,), self.direction)[self.k]


def _sista_embeddings(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
    pred = output["pred"] if isinstance(output, dict) else output
    return pred.image_emb, pred.text_emb
