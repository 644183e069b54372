"""The DICOM grayscale display pipeline: stored pixel values → display values in ``[0, 1]``, higher = brighter.

:func:`dicom_to_display` applies the steps of DICOM PS3.3 C.11 in order:

1. modality LUT: a Modality LUT Sequence, else RescaleSlope/RescaleIntercept;
2. VOI transform (``voi``, one of :data:`VOI_MODES`): ``"auto"`` uses a VOI LUT Sequence, else
   WindowCenter/WindowWidth, else a percentile window; ``"window"`` requires the window tags; ``"percentile"``
   always uses the percentile window; ``"none"`` maps the modality-LUT output's min..max to 0..1;
3. polarity: MONOCHROME1, or a Presentation LUT Shape of ``INVERSE``, is inverted (the two say the same
   thing for DX/CR images, so they are not applied twice).

:func:`apply_window` is the VOI window itself, in float32. The readers that call this pipeline are in :mod:`.io`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pydicom
from monai.config import PathLike
from pydicom.pixels import apply_modality_lut, apply_voi

from sista_monai.errors import ChestXrayReadError

__all__ = ["VOI_MODES", "apply_window", "dicom_to_display"]

VOI_MODES = ("auto", "window", "percentile", "none")


def apply_window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Map values through a DICOM VOI window to ``[0, 1]`` (PS3.3 C.11.2.1.2).

    pydicom's ``apply_windowing`` maps to an output range that depends on BitsStored, the pixel
    representation and the rescale tags; this function implements the same three window functions
    directly onto ``[0, 1]`` in float32, which is what the loader needs and keeps large images fast.

    Args:
        values: modality-LUT output (any shape).
        center: WindowCenter.
        width: WindowWidth (``>= 1`` for LINEAR, ``> 0`` otherwise).
        function: VOILUTFunction: ``LINEAR`` (default), ``LINEAR_EXACT`` or ``SIGMOID``.

    Returns:
        float32 array of the same shape with values in ``[0, 1]``.

    Raises:
        ValueError: for an unknown function, an invalid width, or a non-finite center or width.
    """
    function = (function or "LINEAR").upper()
    if not (math.isfinite(center) and math.isfinite(width)):
        raise ValueError("WindowCenter and WindowWidth must be finite numbers")
    x = np.asarray(values)
    out = np.empty(x.shape, dtype=np.float32)  # C order even for a transposed input view
    if function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"WindowWidth must be > 0 for SIGMOID, got {width}")
        np.multiply(x, np.float32(-4.0 / width), out=out, casting="unsafe")
        out += np.float32(4.0 * center / width)
        np.exp(out, out=out)
        out += np.float32(1.0)
        return np.reciprocal(out, out=out)
    if function == "LINEAR":
        if width < 1:
            raise ValueError(f"WindowWidth must be >= 1 for LINEAR, got {width}")
        scale = 1.0 / max(width - 1.0, 1e-6)
        offset = 0.5 - (center - 0.5) * scale
    elif function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"WindowWidth must be > 0 for LINEAR_EXACT, got {width}")
        scale = 1.0 / width
        offset = 0.5 - center * scale
    else:
        raise ValueError(f"unknown VOILUTFunction {function!r}")
    return _affine_clip(x, scale, offset, out)


def _affine_clip(x: np.ndarray, scale: float, offset: float, out: np.ndarray | None = None) -> np.ndarray:
    """``clip(x * scale + offset, 0, 1)`` in float32, in three passes over a C-ordered output."""
    if out is None:
        out = np.empty(x.shape, dtype=np.float32)
    np.multiply(x, np.float32(scale), out=out, casting="unsafe")
    out += np.float32(offset)
    return np.clip(out, 0.0, 1.0, out=out)


def _rescale_to_unit(values: np.ndarray, low: float, high: float) -> np.ndarray:
    x = np.asarray(values)
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        return np.zeros(x.shape, dtype=np.float32)
    return _affine_clip(x, 1.0 / (high - low), -low / (high - low))


def _percentile_window(values: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """Percentile bounds, computed on a regular grid subsample of at most about 512 x 512 pixels.

    Display windows do not need more: on the real samples the bounds move by well under one grey level of
    the output, and the full-size partition would cost more than decoding a 2500x2048 image.
    """
    step = max(1, math.ceil(math.sqrt(values.size / 262_144)))
    sample = values[::step, ::step] if values.ndim == 2 else values.ravel()[::step]
    low, high = np.percentile(sample, percentiles)
    return float(low), float(high)


def _first(value: Any, index: int = 0) -> float:
    if isinstance(value, (Sequence, pydicom.multival.MultiValue)) and not isinstance(value, (str, bytes)):
        return float(value[min(index, len(value) - 1)])
    return float(value)


def _finite_header_number(ds: pydicom.Dataset, keyword: str, default: float, source: PathLike | str) -> float:
    """A numeric header element as a finite float32-representable number (``default`` when absent or empty).

    Raises:
        ChestXrayReadError: the value is not a number, or is NaN/infinite (in float32).
    """
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise ChestXrayReadError(source, f"{keyword} is not a number") from err
    with np.errstate(over="ignore"):
        if not math.isfinite(number) or not np.isfinite(np.float32(number)):
            raise ChestXrayReadError(source, f"{keyword} is not a finite number")
    return number


def dicom_to_display(
    ds: pydicom.Dataset,
    pixels: np.ndarray,
    voi: str = "auto",
    percentiles: tuple[float, float] = (0.5, 99.5),
    window_index: int = 0,
    source: PathLike | str = "<dataset>",
) -> tuple[np.ndarray, str]:
    """Apply the modality LUT, the VOI transform and the polarity to stored pixel values.

    Args:
        ds: the dataset the pixels came from (only its LUT, window and photometric tags are read).
        pixels: the stored values, ``(Rows, Columns)`` or its transpose (the operations are element-wise;
            the output is C-ordered in the layout given).
        voi: one of :data:`VOI_MODES` (see the module docstring).
        percentiles: lower and upper percentiles of the percentile window.
        window_index: which WindowCenter/WindowWidth pair (or VOI LUT item) to use when several are given.
        source: file name for error messages.

    Returns:
        ``(image, voi_source)``: float32 ``(Rows, Columns)`` in ``[0, 1]``, higher = brighter, and the VOI
        actually applied (``"voi_lut"``, ``"window"``, ``"percentile"`` or ``"none"``).

    Raises:
        ChestXrayReadError: ``voi="window"`` without window tags, or invalid window/LUT values.
    """
    if voi not in VOI_MODES:
        raise ValueError(f"voi must be one of {VOI_MODES}, got {voi!r}")
    if "ModalityLUTSequence" in ds:
        try:
            values = apply_modality_lut(pixels, ds)
        except (ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
            raise ChestXrayReadError(source, f"invalid Modality LUT Sequence ({type(err).__name__})") from err
    else:
        # RescaleSlope/Intercept in float32: pydicom's apply_modality_lut promotes to float64, which doubles
        # the cost of this step on 2500x2048 detector images for no gain at display precision.
        slope = _finite_header_number(ds, "RescaleSlope", 1.0, source)
        intercept = _finite_header_number(ds, "RescaleIntercept", 0.0, source)
        values = pixels
        if slope != 1.0 or intercept != 0.0:
            values = np.empty(pixels.shape, dtype=np.float32)
            np.multiply(pixels, np.float32(slope), out=values, casting="unsafe")
            values += np.float32(intercept)

    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    try:
        if voi == "auto" and "VOILUTSequence" in ds:
            lut_item = ds.VOILUTSequence[min(window_index, len(ds.VOILUTSequence) - 1)]
            bits = int(lut_item.LUTDescriptor[2])
            lut_input = values if np.issubdtype(values.dtype, np.integer) else np.rint(values).astype(np.int64)
            out = _rescale_to_unit(apply_voi(lut_input, ds, index=window_index), 0.0, 2.0**bits - 1.0)
            used = "voi_lut"
        elif voi in ("auto", "window") and has_window:
            center = _first(ds.WindowCenter, window_index)
            width = _first(ds.WindowWidth, window_index)
            out = apply_window(values, center, width, str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR"))
            used = "window"
        elif voi == "window":
            raise ChestXrayReadError(source, "voi='window' but the file has no WindowCenter/WindowWidth")
        elif voi == "none":
            out = _rescale_to_unit(values, float(np.min(values)), float(np.max(values)))
            used = "none"
        else:
            out = _rescale_to_unit(values, *_percentile_window(np.asarray(values), percentiles))
            used = "percentile"
    except ChestXrayReadError:
        raise
    except (ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise ChestXrayReadError(source, f"invalid VOI/LUT values ({type(err).__name__}: {err})") from err

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    presentation = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    if photometric == "MONOCHROME1" or presentation == "INVERSE":
        out = np.subtract(np.float32(1.0), out, out=out)
    return out.astype(np.float32, copy=False), used
