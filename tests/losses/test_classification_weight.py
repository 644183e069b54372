"""The classification loss's positive-class weight."""

from __future__ import annotations

import pytest

from sista_monai.losses import positive_class_weight


def test_positive_class_weight_balances_the_classes() -> None:
    items = [{"label": 0}] * 6 + [{"label": 1}] * 2
    assert positive_class_weight(items).tolist() == [3.0]
    with pytest.raises(ValueError, match="both classes are needed"):
        positive_class_weight([{"label": 0}] * 3)
