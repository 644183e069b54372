"""The verified persistent cache: a miss returns what a hit returns, so partly cached runs collate."""

from __future__ import annotations

from pathlib import Path

import torch
from monai.data import DataLoader, MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, Lambdad

from sista_monai.data.cache import VerifiedPersistentDataset


def _items(n: int) -> list[dict]:
    return [{"image": torch.full((4, 4), float(k)), "label": k} for k in range(n)]


def _transform() -> Compose:
    return Compose(
        [
            Lambdad("image", lambda x: MetaTensor(x, meta={"source": "test"})),
            EnsureChannelFirstd("image", channel_dim="no_channel"),
        ]
    )


def test_a_batch_of_cached_and_new_items_collates_and_matches(tmp_path: Path) -> None:
    VerifiedPersistentDataset(_items(2), _transform(), cache_dir=tmp_path)[0]  # an earlier run cached item 0
    dataset = VerifiedPersistentDataset(_items(3), _transform(), cache_dir=tmp_path)
    assert {type(dataset[k]["image"]) for k in range(3)} == {torch.Tensor}  # hit (item 0) and misses alike
    batch = next(iter(DataLoader(VerifiedPersistentDataset(_items(3), _transform(), cache_dir=tmp_path), batch_size=3)))
    assert batch["image"].shape == (3, 1, 4, 4)
    torch.testing.assert_close(batch["image"][:, 0, 0, 0], torch.tensor([0.0, 1.0, 2.0]))
