"""What the two alignment levels claim, measured against known truth.

* :func:`pointing_game` / :class:`PointingGame` (STA): for each zone word of a report (``right``, ``lower``,
  ``apical``...), does the image patch most similar to that word lie inside the finding's zone? Chance is the
  fraction of patches inside the zone. The word–patch similarity is the per-pair cosine ``S = W Pᵀ`` of the
  STA loss, whose row-wise argmax is also the argmax of its sparse alignment weights.
* :func:`flag_statistics` / :class:`FalseNegativeFlags` (SIA): of the unpaired report pairs that the
  report similarity flags as false negatives (``R_ij ≥ θ``), how many really agree on their findings?
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from monai.utils import IgniteInfo, min_version, optional_import

from sista_monai.losses.similarity import REPORT_SIMILARITY_SOURCES, ReportSimilarity, finding_label_agreement

Metric, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Metric")
reinit__is_reduced, _ = optional_import("ignite.metrics.metric", IgniteInfo.OPT_IMPORT_VERSION, min_version, "reinit__is_reduced")
idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")

__all__ = ["zone_cells", "pointing_game", "PointingGame", "flag_statistics", "FalseNegativeFlags"]


def zone_cells(zone_mask: torch.Tensor, patch_grid: tuple[int, int]) -> torch.Tensor:
    """``(B, P)`` bool: the patches whose area lies mostly (> 50 %) inside each image's zone mask.

    Args:
        zone_mask: ``(B, 1, W, H)`` masks in the network input's geometry.
        patch_grid: the encoder's ``(gx, gy)`` patch grid (patch ``k`` at ``(k // gy, k % gy)``).
    """
    cover = F.adaptive_avg_pool2d(zone_mask.float(), patch_grid)
    return (cover[:, 0] > 0.5).flatten(1)


def pointing_game(
    patch_emb: torch.Tensor,
    token_emb: torch.Tensor,
    pointing_mask: torch.Tensor,
    zone_mask: torch.Tensor,
    patch_grid: tuple[int, int],
) -> tuple[int, int, float]:
    """Hits, trials and summed chance of the pointing game on one batch.

    Args:
        patch_emb: ``(B, P, D)`` patch embeddings.
        token_emb: ``(B, T, D)`` token embeddings.
        pointing_mask: ``(B, T)`` bool, the zone-word tokens to test.
        zone_mask: ``(B, 1, W, H)`` the finding zone of each image (empty: the image takes no trial).
        patch_grid: patch grid of the encoder.

    Returns:
        ``(hits, trials, chance_sum)``; accuracy is ``hits / trials`` and chance ``chance_sum / trials``.
    """
    cells = zone_cells(zone_mask, patch_grid)  # (B, P)
    trials_mask = pointing_mask.bool() & cells.any(dim=1, keepdim=True)
    if not trials_mask.any():
        return 0, 0, 0.0
    similarity = torch.einsum("btd,bpd->btp", token_emb.float(), patch_emb.float())
    best = similarity.argmax(dim=-1)  # (B, T)
    hit = torch.gather(cells, 1, best)  # (B, T)
    chance = cells.float().mean(dim=1, keepdim=True).expand_as(hit)
    return int(hit[trials_mask].sum()), int(trials_mask.sum()), float(chance[trials_mask].sum())


def _output(output: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    if isinstance(output, dict):
        return output["pred"], output.get("label") or {}
    return output


class PointingGame(Metric):
    """Ignite metric: pointing-game ``"accuracy"`` or its ``"chance"`` level over an evaluation epoch.

    Expects the evaluator output ``{"pred": SISTAOutput, "label": {"pointing_mask", "zone_mask", ...}}`` (what
    MONAI's ``SupervisedEvaluator`` produces with :class:`~sista_monai.engines.SISTAPrepareBatch`).

    Args:
        report: ``"accuracy"`` or ``"chance"``.
        output_transform: maps the engine output to ``(pred, targets)``.
    """

    def __init__(self, report: str = "accuracy", output_transform: Callable[[Any], Any] = _output, device: str | torch.device = "cpu") -> None:
        if report not in ("accuracy", "chance"):
            raise ValueError(f"report must be 'accuracy' or 'chance', got {report!r}")
        self.report = report
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._counts = torch.zeros(3, dtype=torch.float64, device=self._device)

    @reinit__is_reduced
    def update(self, output: tuple[Any, dict[str, torch.Tensor]]) -> None:
        pred, targets = output
        if "pointing_mask" not in targets or "zone_mask" not in targets:
            raise KeyError("PointingGame needs 'pointing_mask' and 'zone_mask' in the batch")
        hits, trials, chance = pointing_game(
            pred.patch_emb, pred.token_emb, targets["pointing_mask"], targets["zone_mask"], pred.patch_grid
        )
        self._counts += torch.tensor([hits, trials, chance], dtype=torch.float64, device=self._device)

    def compute(self) -> float:
        counts = idist.all_reduce(self._counts.clone()) if idist.get_world_size() > 1 else self._counts
        if counts[1] == 0:
            return float("nan")
        return float(counts[0 if self.report == "accuracy" else 2] / counts[1])


def flag_statistics(report_features: torch.Tensor, labels: torch.Tensor, threshold: float, source: str) -> dict[str, float]:
    """False-negative flag rate and precision over a whole set of reports.

    Args:
        report_features: ``(N, F)`` features of the similarity source (frozen/online text embeddings or labels).
        labels: ``(N, C)`` finding vectors, the truth.
        threshold: θ.
        source: the :class:`~sista_monai.losses.ReportSimilarity` source the features come from.

    Returns:
        ``{"flag_rate", "flag_precision", "flagged_pairs"}``; precision is NaN when nothing is flagged.
    """
    similarity = ReportSimilarity(source, gather_distributed=False)(report_features)
    agreement = finding_label_agreement(labels, gather_distributed=False)
    off_diagonal = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    flags = (similarity >= threshold) & off_diagonal
    n_flags = int(flags.sum())
    return {
        "flag_rate": float(n_flags / max(int(off_diagonal.sum()), 1)),
        "flag_precision": float(agreement[flags].float().mean()) if n_flags else float("nan"),
        "flagged_pairs": n_flags,
    }


class FalseNegativeFlags(Metric):
    """Ignite metric: SIA false-negative ``"precision"`` or ``"rate"`` on a whole evaluation split.

    Args:
        threshold: θ of the SIA loss.
        source: report-similarity source (``text_frozen``, ``text_online``, ``labels``).
        report: ``"precision"`` or ``"rate"``.
        output_transform: maps the engine output to ``(pred, targets)`` (targets hold ``labels``).
    """

    def __init__(
        self,
        threshold: float,
        source: str = "text_frozen",
        report: str = "precision",
        output_transform: Callable[[Any], Any] = _output,
        device: str | torch.device = "cpu",
    ) -> None:
        if source not in REPORT_SIMILARITY_SOURCES:
            raise ValueError(f"source must be one of {REPORT_SIMILARITY_SOURCES}, got {source!r}")
        if report not in ("precision", "rate"):
            raise ValueError(f"report must be 'precision' or 'rate', got {report!r}")
        self.threshold, self.source, self.report = float(threshold), source, report
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
        features = {"text_frozen": pred.frozen_text_features, "text_online": pred.text_emb, "labels": labels}[self.source]
        if features is None:
            raise ValueError("source 'text_frozen' needs a model with keep_frozen_text_copy=True")
        self._features.append(features.detach().float().to(self._device))
        self._labels.append(labels.detach().float().to(self._device))

    def compute(self) -> float:
        features, labels = torch.cat(self._features), torch.cat(self._labels)
        if idist.get_world_size() > 1:
            features, labels = idist.all_gather(features), idist.all_gather(labels)
        stats = flag_statistics(features, labels, self.threshold, self.source)
        return stats["flag_precision" if self.report == "precision" else "flag_rate"]
