"""The oracle patch probe on hand-built features: it follows a lesion that its features show, not one they hide."""

from __future__ import annotations

import torch

from sista_monai.experiments.patch_probe import fit_patch_probes, probe_follow

P, C = 16, 6


def _images(boxes: list[int], lesion_signal: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One image per entry: patch ``boxes[n]`` (class 0) carries ``lesion_signal`` along feature axis 0."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(boxes), P, C, generator=generator)
    cells = torch.zeros(len(boxes), 2, P, dtype=torch.bool)
    for n, patch in enumerate(boxes):
        features[n, patch, 0] += lesion_signal
        cells[n, 0, patch] = True
    return features, cells


def test_probe_follows_a_lesion_the_features_show() -> None:
    train, train_cells = _images([k % P for k in range(40)], 6.0, seed=0)
    probes = fit_patch_probes(train, train_cells)
    assert probes[1] is None  # no training image shows class 1
    original, original_cells = _images([2, 5, 9, 12], 6.0, seed=1)
    twin, twin_cells = _images([13, 0, 3, 7], 6.0, seed=1)  # the same noise, the lesion moved
    follows, classes = probe_follow(probes, original, twin, original_cells, twin_cells)
    assert follows == [True] * 4 and classes == [0] * 4


def test_probe_cannot_follow_what_the_features_hide() -> None:
    train, train_cells = _images([k % P for k in range(40)], 0.0, seed=0)  # no lesion signal: a prior at best
    probes = fit_patch_probes(train, train_cells)
    original, original_cells = _images(list(range(P)), 0.0, seed=2)
    twin, twin_cells = _images([(k + 5) % P for k in range(P)], 0.0, seed=2)
    follows, _ = probe_follow(probes, original, twin, original_cells, twin_cells)
    assert len(follows) == P and sum(follows) <= 2  # the same argmax in both images cannot hit two boxes
