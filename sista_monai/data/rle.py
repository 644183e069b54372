"""Run-length encoding of SIIM-ACR pneumothorax masks (stage-1 relative and stage-2 absolute formats).

Both SIIM formats number the pixels of an image **column-major** (top to bottom, then left to right): pixel
``(row, col)`` of an image with ``rows`` rows has the flat index ``col * rows + row``. A mask is decoded into
a flat array of ``rows * cols`` pixels, which is then reshaped in Fortran order to the natural
``(rows, cols)`` orientation of the DICOM pixel array. An encoding is a string of whitespace-separated
``start length`` pairs; ``-1`` (also written `` -1``) and the empty string mean an empty mask.

* **stage 1** (``train-rle.csv`` of the first stage, the file the public copies carry): each ``start`` is the
  number of background pixels since the end of the previous run (the first one counts from pixel 0), so the
  first run covers the 0-based flat pixels ``[start, start + length)``.
* **stage 2** (``stage_2_train.csv``, the usual Kaggle RLE): each ``start`` is the absolute, **1-based** flat
  index of the run's first pixel; runs are increasing and do not overlap.

:func:`detect_rle_format` tells the two apart from the encodings themselves (see its docstring), and
:func:`decode_rle` / :func:`encode_rle` convert between masks and strings. Decoding is vectorised with numpy
(a difference array over the run boundaries), never a loop over pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from sista_monai.errors import RLEError

__all__ = [
    "RLE_FORMATS",
    "EMPTY_RLE",
    "RLEError",
    "RunLengths",
    "parse_rle",
    "absolute_runs",
    "detect_rle_format",
    "decode_rle",
    "decode_runs",
    "encode_rle",
]

RLE_FORMATS: tuple[str, ...] = ("stage1", "stage2")
"""The concrete encodings; ``"auto"`` is accepted wherever a format is detected."""

EMPTY_RLE = "-1"
"""How both formats write an empty mask."""


@dataclass(frozen=True)
class RunLengths:
    """The ``start length`` pairs of one encoding, as written (not yet made absolute).

    Attributes:
        starts: the start values (relative gaps for stage 1, 1-based absolute indices for stage 2).
        lengths: the run lengths, all positive.
    """

    starts: np.ndarray
    lengths: np.ndarray

    @property
    def empty(self) -> bool:
        """Whether the encoding has no run."""
        return self.starts.size == 0


def parse_rle(encoding: str, source: object = "RLE") -> RunLengths:
    """Parse an RLE string into its start and length values, without interpreting the starts.

    Args:
        encoding: the ``EncodedPixels`` field; ``"-1"``, ``" -1"`` and ``""`` are the empty mask.
        source: how errors name the encoding (e.g. ``"train-rle.csv, row 7"``).

    Returns:
        The pairs as int64 arrays.

    Raises:
        RLEError: when a value is not a non-negative integer, the count of values is odd, or a length is 0.
    """
    text = encoding.strip()
    if text in ("", EMPTY_RLE):
        empty = np.zeros(0, dtype=np.int64)
        return RunLengths(empty, empty)
    fields = text.split()
    if not all(field.isdigit() for field in fields):
        raise RLEError(source, "EncodedPixels must be -1 or non-negative integers separated by spaces")
    if len(fields) % 2:
        raise RLEError(source, f"EncodedPixels has an odd number of values ({len(fields)}): not start/length pairs")
    values = np.array([int(field) for field in fields], dtype=np.int64)
    starts, lengths = values[0::2], values[1::2]
    if np.any(lengths == 0):
        raise RLEError(source, f"run {int(np.argmax(lengths == 0)) + 1} has length 0")
    return RunLengths(starts, lengths)


def absolute_runs(runs: RunLengths, rle_format: str, source: object = "RLE") -> np.ndarray:
    """0-based absolute starts of the runs of an encoding in ``rle_format``.

    Args:
        runs: the parsed pairs.
        rle_format: ``"stage1"`` (relative starts) or ``"stage2"`` (absolute 1-based starts).
        source: how errors name the encoding.

    Returns:
        The 0-based flat index of each run's first pixel (int64).

    Raises:
        RLEError: for a stage-2 encoding with a start of 0 or runs that are not increasing and disjoint.
        ValueError: for an unknown ``rle_format``.
    """
    if rle_format == "stage1":
        ends_before = np.concatenate(([0], np.cumsum(runs.lengths)[:-1]))
        return np.cumsum(runs.starts) + ends_before
    if rle_format == "stage2":
        if runs.starts.size and runs.starts.min() < 1:
            raise RLEError(source, "stage-2 starts are 1-based, found a start of 0")
        starts = runs.starts - 1
        if np.any(starts[1:] < starts[:-1] + runs.lengths[:-1]):
            raise RLEError(source, "stage-2 runs must be increasing and must not overlap")
        return starts
    raise ValueError(f"rle_format must be one of {RLE_FORMATS}, got {rle_format!r}")


def _is_absolute(runs: RunLengths) -> bool:
    """Whether the pairs read as valid stage-2 runs (1-based, increasing, disjoint)."""
    starts = runs.starts
    return bool(starts.size == 0 or (starts.min() >= 1 and np.all(starts[1:] >= starts[:-1] + runs.lengths[:-1])))


def detect_rle_format(encodings: Iterable[RunLengths], sizes: Iterable[int] | None = None) -> str:
    """Tell stage-1 (relative) from stage-2 (absolute) encodings.

    Absolute starts never decrease, so one encoding whose starts, read as absolute runs, go backwards or
    overlap proves stage 1 (every multi-run SIIM stage-1 row does: its gaps are about one image height, far
    below its first start). When every encoding also reads as valid absolute runs, the pixel counts break
    the tie: if some encoding runs past its image when read as relative starts but none does when read as
    absolute starts, the file is stage 2. Otherwise (e.g. a file of single-run rows, which both formats
    read the same up to one pixel) the format cannot be told and must be given.

    Args:
        encodings: the parsed non-empty encodings of a file.
        sizes: the pixel count (rows * cols) of each encoding's image, in the same order, when known.

    Returns:
        ``"stage1"`` or ``"stage2"``.

    Raises:
        RLEError: when the encodings fit both formats.
    """
    runs_list = [runs for runs in encodings]
    if any(not _is_absolute(runs) for runs in runs_list):
        return "stage1"
    if sizes is not None:
        size_list = list(sizes)
        relative_fits = all(
            runs.empty or int(absolute_runs(runs, "stage1")[-1] + runs.lengths[-1]) <= size
            for runs, size in zip(runs_list, size_list, strict=True)
        )
        absolute_fits = all(
            runs.empty or int(runs.starts[-1] - 1 + runs.lengths[-1]) <= size
            for runs, size in zip(runs_list, size_list, strict=True)
        )
        if absolute_fits and not relative_fits:
            return "stage2"
    raise RLEError(
        "RLE format",
        "cannot tell stage-1 (relative) from stage-2 (absolute) starts in these encodings: give the format",
    )


def decode_runs(starts: np.ndarray, lengths: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Paint runs given by 0-based absolute column-major starts into a ``(rows, cols)`` mask.

    Runs may overlap (e.g. the merged rows of one image); their union is painted.

    Args:
        starts: 0-based flat indices of the first pixel of each run.
        lengths: the run lengths.
        shape: ``(rows, cols)`` of the image.

    Returns:
        The ``uint8`` mask of 0/1 with shape ``(rows, cols)``.

    Raises:
        ValueError: when a run leaves the image.
    """
    rows, cols = shape
    size = rows * cols
    starts = np.asarray(starts, dtype=np.int64)
    ends = starts + np.asarray(lengths, dtype=np.int64)
    if starts.size and (starts.min() < 0 or ends.max() > size):
        raise ValueError(f"runs cover pixels up to {int(ends.max())} but the image has {size} ({rows}x{cols})")
    boundaries = np.zeros(size + 1, dtype=np.int32)
    np.add.at(boundaries, starts, 1)
    np.add.at(boundaries, ends, -1)
    flat = np.cumsum(boundaries[:-1], dtype=np.int32) > 0
    return flat.reshape((rows, cols), order="F").astype(np.uint8)


def decode_rle(
    encoding: str | Sequence[str], shape: tuple[int, int], rle_format: str = "stage1", source: object = "RLE"
) -> np.ndarray:
    """Decode one RLE string, or the union of several (all rows of one image), into a mask.

    Args:
        encoding: an ``EncodedPixels`` string or a sequence of them.
        shape: ``(rows, cols)`` of the image (DICOM ``Rows``, ``Columns``).
        rle_format: ``"stage1"``, ``"stage2"`` or ``"auto"`` (see :func:`detect_rle_format`).
        source: how errors name the encoding.

    Returns:
        ``uint8`` mask of 0/1, shape ``(rows, cols)``.

    Raises:
        RLEError: when an encoding is malformed, the format cannot be detected, or a run leaves the image.
    """
    encodings = [encoding] if isinstance(encoding, str) else list(encoding)
    parsed = [parse_rle(text, source) for text in encodings]
    size = int(shape[0]) * int(shape[1])
    if rle_format == "auto":
        non_empty = [runs for runs in parsed if not runs.empty]
        rle_format = detect_rle_format(non_empty, [size] * len(non_empty)) if non_empty else "stage1"
    starts, lengths = [], []
    for runs in parsed:
        absolute = absolute_runs(runs, rle_format, source)
        if absolute.size and int(absolute[-1] + runs.lengths[-1]) > size:
            raise RLEError(
                source,
                f"runs past the image: they need {int(absolute[-1] + runs.lengths[-1])} pixels, the image has "
                f"{size} ({shape[0]}x{shape[1]})",
            )
        starts.append(absolute)
        lengths.append(runs.lengths)
    return decode_runs(
        np.concatenate(starts) if starts else np.zeros(0, np.int64),
        np.concatenate(lengths) if lengths else np.zeros(0, np.int64),
        (int(shape[0]), int(shape[1])),
    )


def encode_rle(mask: np.ndarray, rle_format: str = "stage1") -> str:
    """Encode a ``(rows, cols)`` mask as an RLE string (nonzero pixels are foreground).

    Args:
        mask: a 2-D array in the DICOM's ``(rows, cols)`` orientation.
        rle_format: ``"stage1"`` (relative starts) or ``"stage2"`` (absolute 1-based starts).

    Returns:
        ``"start length start length ..."``, or ``"-1"`` for an empty mask.

    Raises:
        ValueError: when ``mask`` is not 2-D or the format is unknown.
    """
    if rle_format not in RLE_FORMATS:
        raise ValueError(f"rle_format must be one of {RLE_FORMATS}, got {rle_format!r}")
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (rows, cols), got shape {mask.shape}")
    flat = np.concatenate(([False], mask.ravel(order="F") != 0, [False]))
    changes = np.flatnonzero(flat[1:] != flat[:-1])
    if changes.size == 0:
        return EMPTY_RLE
    starts, ends = changes[0::2], changes[1::2]
    lengths = ends - starts
    if rle_format == "stage2":
        written = starts + 1
    else:
        written = starts - np.concatenate(([0], ends[:-1]))
    pairs = np.stack([written, lengths], axis=1).ravel()
    return " ".join(str(int(value)) for value in pairs)
