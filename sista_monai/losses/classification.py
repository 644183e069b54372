"""Class balance of the classification bundle's loss (``BCEWithLogitsLoss(pos_weight=...)``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from sista_monai.config import as_flag

__all__ = ["positive_class_weight", "balanced_pos_weight"]


def positive_class_weight(items: Sequence[Mapping[str, Any]], label_key: str = "label") -> torch.Tensor:
    """``pos_weight`` of ``BCEWithLogitsLoss`` that balances the classes of a training list: ``[#neg / #pos]``.

    Raises:
        ValueError: the list lacks one of the two classes.
    """
    labels = [float(item[label_key]) for item in items]
    positives = sum(1 for v in labels if v >= 0.5)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        raise ValueError(
            f"the training list has {positives} positive and {negatives} negative items: both classes are needed"
        )
    return torch.tensor([negatives / positives], dtype=torch.float32)


def balanced_pos_weight(
    items: Sequence[Mapping[str, Any]],
    balance_classes: bool | str = True,
    device: torch.device | str | None = None,
    label_key: str = "label",
) -> torch.Tensor | None:
    """The classification bundle's ``pos_weight``: :func:`positive_class_weight` on ``device`` when
    ``balance_classes`` (booleans as typed on the command line), else ``None`` (an unweighted loss)."""
    if not as_flag(balance_classes, "balance_classes"):
        return None
    return positive_class_weight(items, label_key).to(device)
