"""SIIM run-length encoding: decoding against a plain loop, round trips, format detection, errors."""

from __future__ import annotations

import numpy as np
import pytest

from sista_monai.data.rle import (
    RLEError,
    decode_rle,
    detect_rle_format,
    encode_rle,
    parse_rle,
)


def reference_decode_stage1(encoding: str, rows: int, cols: int) -> np.ndarray:
    """The SIIM sample code's decoder: relative starts, column-major pixels, then transposed."""
    flat = np.zeros(rows * cols, dtype=np.uint8)
    if encoding.strip() != "-1":
        values = [int(v) for v in encoding.split()]
        position = 0
        for start, length in zip(values[0::2], values[1::2], strict=True):
            position += start
            for pixel in range(position, position + length):
                flat[pixel] = 1
            position += length
    return flat.reshape(cols, rows).T


def reference_decode_stage2(encoding: str, rows: int, cols: int) -> np.ndarray:
    """Standard Kaggle RLE: 1-based absolute starts, column-major pixels."""
    flat = np.zeros(rows * cols, dtype=np.uint8)
    if encoding.strip() != "-1":
        values = [int(v) for v in encoding.split()]
        for start, length in zip(values[0::2], values[1::2], strict=True):
            for pixel in range(start - 1, start - 1 + length):
                flat[pixel] = 1
    return flat.reshape(cols, rows).T


def special_masks() -> list[np.ndarray]:
    masks = []
    for shape in ((1, 1), (1, 6), (6, 1), (5, 3), (4, 7)):
        masks.append(np.zeros(shape, np.uint8))
        masks.append(np.ones(shape, np.uint8))
    single_corners = []
    for row, col in ((0, 0), (0, 6), (4, 0), (4, 6), (2, 3)):
        mask = np.zeros((5, 7), np.uint8)
        mask[row, col] = 1
        single_corners.append(mask)
    edges = np.zeros((5, 7), np.uint8)
    edges[:, 0] = 1  # first column: a run from pixel 0
    edges[:, -1] = 1  # last column: a run to the last pixel
    edges[3:, 2] = 1
    edges[:2, 3] = 1  # a run that wraps from the bottom of column 2 into the top of column 3
    return masks + single_corners + [edges]


def random_masks(count: int = 30) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    masks = []
    for _ in range(count):
        rows, cols = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        density = float(rng.uniform(0.05, 0.95))
        masks.append((rng.random((rows, cols)) < density).astype(np.uint8))
    return masks


@pytest.mark.parametrize("rle_format", ["stage1", "stage2"])
def test_round_trip(rle_format):
    for mask in special_masks() + random_masks():
        encoding = encode_rle(mask, rle_format)
        decoded = decode_rle(encoding, mask.shape, rle_format)
        assert decoded.dtype == np.uint8 and decoded.shape == mask.shape
        np.testing.assert_array_equal(decoded, mask)
        reference = reference_decode_stage1 if rle_format == "stage1" else reference_decode_stage2
        np.testing.assert_array_equal(reference(encoding, *mask.shape), mask)


def test_known_encodings():
    # 3 rows x 2 cols; column-major flat pixels 0..5 = (0,0) (1,0) (2,0) (0,1) (1,1) (2,1)
    expected = np.array([[1, 0], [1, 1], [0, 0]], np.uint8)
    assert encode_rle(expected, "stage1") == "0 2 2 1"
    assert encode_rle(expected, "stage2") == "1 2 5 1"
    np.testing.assert_array_equal(decode_rle("0 2 2 1", (3, 2), "stage1"), expected)
    np.testing.assert_array_equal(decode_rle("1 2 5 1", (3, 2), "stage2"), expected)
    assert encode_rle(np.zeros((3, 2)), "stage1") == "-1"
    for empty in ("-1", " -1", ""):
        assert decode_rle(empty, (3, 2)).sum() == 0


def test_non_square_orientation():
    mask = np.zeros((2, 5), np.uint8)
    mask[1, 4] = 1  # last row, last column: the last column-major pixel
    assert encode_rle(mask, "stage2") == "10 1"
    np.testing.assert_array_equal(decode_rle("9 1", (2, 5), "stage1"), mask)


def test_merging_rows_is_a_union():
    first, second = np.zeros((6, 6), np.uint8), np.zeros((6, 6), np.uint8)
    first[1:4, 1:3] = 1
    second[2:5, 2:5] = 1
    merged = decode_rle([encode_rle(first), encode_rle(second), "-1"], (6, 6))
    np.testing.assert_array_equal(merged, first | second)


def test_decode_matches_reference_on_a_realistic_mask():
    rows = cols = 256
    yy, xx = np.mgrid[:rows, :cols]
    mask = (((yy - 60) ** 2 / 900 + (xx - 80) ** 2 / 400) < 1).astype(np.uint8)
    mask |= ((yy > 150) & (yy < 200) & (xx > 150) & (xx < 170)).astype(np.uint8)
    encoding = encode_rle(mask, "stage1")
    np.testing.assert_array_equal(reference_decode_stage1(encoding, rows, cols), mask)
    np.testing.assert_array_equal(decode_rle(encoding, (rows, cols)), mask)


def test_detect_format():
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 20:40] = 1
    relative = [parse_rle(encode_rle(mask, "stage1"))]
    absolute = [parse_rle(encode_rle(mask, "stage2"))]
    assert detect_rle_format(relative) == "stage1"  # gaps (~44) fall below the first start (~1290)
    assert detect_rle_format(absolute, [64 * 64]) == "stage2"  # read as relative, it runs past the image
    np.testing.assert_array_equal(decode_rle(encode_rle(mask, "stage2"), (64, 64), "auto"), mask)
    np.testing.assert_array_equal(decode_rle(encode_rle(mask, "stage1"), (64, 64), "auto"), mask)
    with pytest.raises(RLEError, match="cannot tell"):
        detect_rle_format([parse_rle("5 3")], [100])  # one run: both formats fit
    with pytest.raises(RLEError, match="cannot tell"):
        detect_rle_format(absolute)  # increasing starts and no image size to break the tie


def test_errors_name_the_source():
    with pytest.raises(RLEError, match=r"train-rle.csv, row 7: runs past the image"):
        decode_rle("10 10", (4, 4), "stage1", source="train-rle.csv, row 7")
    with pytest.raises(RLEError, match="runs past the image"):
        decode_rle("1 17", (4, 4), "stage2")
    with pytest.raises(RLEError, match="odd number"):
        parse_rle("1 2 3")
    with pytest.raises(RLEError, match="non-negative integers"):
        parse_rle("1 -2")
    with pytest.raises(RLEError, match="length 0"):
        parse_rle("4 0")
    with pytest.raises(RLEError, match="increasing"):
        decode_rle("5 3 2 1", (4, 4), "stage2")
    with pytest.raises(RLEError, match="1-based"):
        decode_rle("0 3", (4, 4), "stage2")
    with pytest.raises(ValueError, match="2-D"):
        encode_rle(np.zeros(5), "stage1")
