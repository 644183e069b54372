"""STA sparsity: ``patches_kept`` and the ``PatchesKept`` metric on a hand-computed case."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from sista_monai.metrics import PatchesKept, patches_kept


def test_patches_kept() -> None:
    weights = torch.tensor([[[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]]])
    assert patches_kept(weights, torch.tensor([[True, False]])) == (0.5, 1)
    assert patches_kept(weights, torch.tensor([[True, True]])) == (1.5, 2)
    metric = PatchesKept(sparsity_threshold=0.5)
    metric.reset()
    patches = torch.eye(4).unsqueeze(0)
    tokens = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.9]]])
    metric.update(
        metric._output_transform(
            {
                "pred": SimpleNamespace(patch_emb=patches, token_emb=tokens, token_mask=torch.tensor([[True, True]])),
                "label": {},
            }
        )
    )
    # token 0: min-max -> [1, 0, 0, 0], only patch 0 >= 0.5; token 1: [1, 1, 1, 0] -> three patches
    assert metric.compute() == pytest.approx((1 / 4 + 3 / 4) / 2)
