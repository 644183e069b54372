"""STA sparsity (:func:`patches_kept`, :class:`PatchesKept`): the mean fraction of patches with a non-zero alignment
weight per valid token."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from sista_monai.losses.sta import alignment_weights

from .evaluator_output import _output, _sum_over_ranks

if TYPE_CHECKING:
    from ignite.metrics import Metric
    from ignite.metrics.metric import reinit__is_reduced
else:
    Metric, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Metric")
    reinit__is_reduced, _ = optional_import(
        "ignite.metrics.metric", IgniteInfo.OPT_IMPORT_VERSION, min_version, "reinit__is_reduced"
    )

__all__ = ["PatchesKept", "patches_kept"]


def patches_kept(weights: torch.Tensor, token_mask: torch.Tensor) -> tuple[float, int]:
    """Sum over valid tokens of the fraction of patches with a non-zero weight, and the number of valid tokens.

    Args:
        weights: ``(B, T, P)`` STA alignment weights.
        token_mask: ``(B, T)`` bool valid tokens.
    """
    kept = (weights > 0).double().mean(dim=2)
    return float(kept[token_mask.bool()].sum()), int(token_mask.sum())


class PatchesKept(Metric):
    """Ignite metric: mean fraction of patches with a non-zero STA weight per valid token (1.0 = dense).

    Args:
        sparsity_threshold: σ of the configured STA loss (``None``: ``1 / P``).
        output_transform: maps the engine output to ``(pred, targets)``.
    """

    def __init__(
        self,
        sparsity_threshold: float | None = None,
        output_transform: Callable[[Any], Any] = _output,
        device: str | torch.device = "cpu",
    ) -> None:
        self.sparsity_threshold = sparsity_threshold
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._sums = [0.0, 0.0]

    @reinit__is_reduced
    def update(self, output: tuple[Any, dict[str, torch.Tensor]]) -> None:
        pred, _ = output
        weights = alignment_weights(
            pred.patch_emb.detach().float(), pred.token_emb.detach().float(), self.sparsity_threshold
        )
        kept, tokens = patches_kept(weights, pred.token_mask)
        self._sums[0] += kept
        self._sums[1] += tokens

    def compute(self) -> float:
        kept, tokens = _sum_over_ranks(self._sums, self._device)
        return kept / tokens if tokens else float("nan")
