"""The classification loss's positive-class weight."""

from __future__ import annotations

import pytest
import torch

from sista_monai.losses import balanced_pos_weight, positive_class_weight


def test_positive_class_weight_balances_the_classes() -> None:
    items = [{"label": 0}] * 6 + [{"label": 1}] * 2
    assert positive_class_weight(items).tolist() == [3.0]
    with pytest.raises(ValueError, match="both classes are needed"):
        positive_class_weight([{"label": 0}] * 3)


def test_balanced_pos_weight_follows_the_flag_as_typed() -> None:
    items = [{"label": 1}, {"label": 0}, {"label": 0}, {"label": 0}]
    torch.testing.assert_close(balanced_pos_weight(items, "true"), torch.tensor([3.0]))
    assert balanced_pos_weight(items, "false") is None
    assert balanced_pos_weight([{"label": 1}], False) is None  # no class check when not balancing
    with pytest.raises(ValueError, match="balance_classes must be true or false"):
        balanced_pos_weight(items, "sometimes")
