"""The verified persistent cache: a miss returns what a hit returns, so partly cached runs collate; compact storage."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from monai.data import DataLoader, MetaTensor, PersistentDataset
from monai.data.utils import json_hashing
from monai.transforms import Compose, EnsureChannelFirstd, Lambdad, NormalizeIntensityd

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


def _ramps(n: int) -> list[dict]:
    """Display-normalised images in [0, 1], one finer-grained than 8 bits."""
    return [{"id": f"item{k}", "image": torch.linspace(0, 1, 1000).reshape(1, 25, 40) ** (k + 1)} for k in range(n)]


def _normalised() -> Compose:
    return Compose([NormalizeIntensityd("image", subtrahend=0.5, divisor=0.25)])


NORMALISED_RANGE = {"image": ((0 - 0.5) / 0.25, (1 - 0.5) / 0.25)}


def _cache_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.pt"))


def test_uint8_storage_keeps_values_within_half_a_step_and_reads_back_float32(tmp_path: Path) -> None:
    items = _ramps(2)
    dataset = VerifiedPersistentDataset(
        items, _normalised(), cache_dir=tmp_path, storage_dtype="uint8", storage_ranges=NORMALISED_RANGE
    )
    missed = [dataset[k]["image"] for k in range(2)]
    hit = [dataset[k]["image"] for k in range(2)]
    for k, item in enumerate(items):
        exact = (item["image"] - 0.5) / 0.25
        assert missed[k].dtype == hit[k].dtype == torch.float32
        torch.testing.assert_close(missed[k], hit[k], rtol=0, atol=0)  # a miss gives what a hit gives
        assert float((hit[k] - exact).abs().max()) <= 4 / 510 + 1e-6  # half a step of the range [-2, 2]
        assert float((hit[k] - exact).abs().max()) > 1e-4  # it was quantised
    stored = [torch.load(f, weights_only=True)["image"] for f in _cache_files(tmp_path)]
    assert len(stored) == 2 and {s.dtype for s in stored} == {torch.uint8}
    assert sum(f.stat().st_size for f in _cache_files(tmp_path)) < 2 * (1000 + 2000)  # ~1 byte per pixel


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_an_all_zero_mask_is_stored_as_one_element_and_read_back_exactly(tmp_path: Path, dtype: str) -> None:
    """The pretraining bundle's grounding masks are all zero for items without drawn findings (all of MIMIC-CXR):
    stored as a one-element tensor expanded to its shape, read back as the same zeros; a non-constant mask is not."""
    items = [
        {"id": "empty", "image": torch.rand(1, 64, 64), "mask": torch.zeros(4, 64, 64)},
        {"id": "drawn", "image": torch.rand(1, 64, 64), "mask": (torch.rand(4, 64, 64) > 0.5).float()},
    ]
    ranges = {"image": (0.0, 1.0), "mask": (0.0, 1.0)}
    dataset = VerifiedPersistentDataset(items, None, cache_dir=tmp_path, storage_dtype=dtype, storage_ranges=ranges)
    for _ in range(2):  # a miss, then a hit
        for k, item in enumerate(items):
            mask = dataset[k]["mask"]
            assert mask.dtype == torch.float32 and mask.is_contiguous()
            torch.testing.assert_close(mask, item["mask"], rtol=0, atol=0)
    sizes = {}
    for path in _cache_files(tmp_path):
        stored = torch.load(path, weights_only=True)
        sizes[stored["id"]] = (stored["mask"].untyped_storage().nbytes(), stored["mask"].shape)
    assert sizes["empty"] == (torch.tensor([], dtype=getattr(torch, dtype)).element_size(), (4, 64, 64))
    assert sizes["drawn"][0] == 4 * 64 * 64 * torch.tensor([], dtype=getattr(torch, dtype)).element_size()


def test_float16_storage(tmp_path: Path) -> None:
    dataset = VerifiedPersistentDataset(
        _ramps(1), _normalised(), cache_dir=tmp_path, storage_dtype="float16", storage_ranges=NORMALISED_RANGE
    )
    exact = (_ramps(1)[0]["image"] - 0.5) / 0.25
    assert dataset[0]["image"].dtype == torch.float32
    assert float((dataset[0]["image"] - exact).abs().max()) <= 2 * 2**-11
    assert torch.load(_cache_files(tmp_path)[0], weights_only=True)["image"].dtype == torch.float16


def test_each_storage_dtype_has_its_own_cache_files_and_float32_keeps_the_old_names(tmp_path: Path) -> None:
    names, items = {}, _ramps(1)  # the same tensors: their pickles (the item hash) then match
    for dtype in (None, "float32", "float16", "uint8"):
        folder = tmp_path / str(dtype)
        VerifiedPersistentDataset(
            items,
            _normalised(),
            cache_dir=folder,
            hash_transform=json_hashing,
            storage_dtype=dtype,
            storage_ranges=NORMALISED_RANGE,
        )[0]
        names[dtype] = _cache_files(folder)[0].name
    plain = tmp_path / "plain"
    PersistentDataset(items, _normalised(), cache_dir=plain, hash_transform=json_hashing)[0]
    assert names[None] == names["float32"] == _cache_files(plain)[0].name
    assert len({names["float32"], names["float16"], names["uint8"]}) == 3
    other_range = VerifiedPersistentDataset(
        [], _normalised(), cache_dir=tmp_path, storage_dtype="uint8", storage_ranges={"image": (0, 1)}
    )
    assert other_range.transform_hash not in names["uint8"]  # the range is part of the name too


def test_a_damaged_compact_cache_file_is_recomputed(tmp_path: Path, caplog) -> None:
    items = _ramps(1)

    def dataset() -> VerifiedPersistentDataset:
        return VerifiedPersistentDataset(
            items, _normalised(), cache_dir=tmp_path, storage_dtype="uint8", storage_ranges=NORMALISED_RANGE
        )

    first = dataset()[0]["image"]
    (cache_file,) = _cache_files(tmp_path)
    data = bytearray(cache_file.read_bytes())
    data[-200] ^= 0xFF  # inside the uint8 pixel bytes: still unpickles
    cache_file.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="sista_monai.data.cache"):
        again = dataset()[0]["image"]
    assert "corrupt cache file" in caplog.text and cache_file.name in caplog.text
    torch.testing.assert_close(again, first, rtol=0, atol=0)


def test_values_outside_the_storage_range_are_refused_naming_the_item(tmp_path: Path) -> None:
    items = [{"id": "study-7", "image": torch.tensor([[[0.0, 1.0, 1.2]]])}]
    for dtype in ("uint8", "float16"):
        dataset = VerifiedPersistentDataset(
            items, _normalised(), cache_dir=tmp_path, storage_dtype=dtype, storage_ranges=NORMALISED_RANGE
        )
        with pytest.raises(ValueError, match=r"item id='study-7': 'image' has \[-2, 2\.8\] outside .*\[-2, 2\]"):
            dataset[0]
    assert _cache_files(tmp_path) == []
    # within half a step of the range end: float rounding, clipped
    edge = [{"image": torch.tensor([[[0.0, 1.0 + 0.9 / 510]]])}]
    dataset = VerifiedPersistentDataset(
        edge, _normalised(), cache_dir=tmp_path, storage_dtype="uint8", storage_ranges=NORMALISED_RANGE
    )
    torch.testing.assert_close(dataset[0]["image"], torch.tensor([[[-2.0, 2.0]]]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"storage_dtype": "int8"}, "storage_dtype must be one of"),
        ({"storage_dtype": "uint8"}, "needs storage_ranges"),
        ({"storage_dtype": "uint8", "storage_ranges": {"image": (1, 1)}}, "hi > lo"),
    ],
)
def test_bad_storage_arguments_are_refused(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VerifiedPersistentDataset([], _normalised(), cache_dir=tmp_path, **kwargs)


def test_compact_cache_with_two_dataloader_workers(tmp_path: Path) -> None:
    items = _ramps(4)

    def loader() -> DataLoader:
        dataset = VerifiedPersistentDataset(
            items, _normalised(), cache_dir=tmp_path, storage_dtype="uint8", storage_ranges=NORMALISED_RANGE
        )
        return DataLoader(dataset, batch_size=2, num_workers=2)

    first = torch.cat([batch["image"] for batch in loader()])  # workers write the cache
    assert len(_cache_files(tmp_path)) == 4
    again = torch.cat([batch["image"] for batch in loader()])  # and read it
    assert first.dtype == again.dtype == torch.float32 and first.shape == (4, 1, 25, 40)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    exact = torch.stack([(item["image"] - 0.5) / 0.25 for item in _ramps(4)])
    assert float((again - exact).abs().max()) <= 4 / 510 + 1e-6
