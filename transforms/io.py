"""Loading chest radiographs (DICOM, PNG, JPEG) as display-normalised MONAI images.

Array layout (one convention for the whole project, MONAI's): the loaded image is a channel-first
``(1, W, H)`` float32 :class:`~monai.data.MetaTensor`. The first spatial axis is the DICOM *column*
(``x``), the second the DICOM *row* (``y``); this is the transpose of pydicom's ``(Rows, Columns)``
``pixel_array`` and the same layout MONAI's ``PILReader``/``PydicomReader`` and MONAI Deploy's ``(W, H, 1)``
arrays use. An RSNA box ``(x, y, width, height)`` in DICOM pixels therefore covers
``image[0, x:x + width, y:y + height]``, and MONAI's box transforms (mode ``"xywh"``/``"xyxy"``) apply
without axis swaps.

Values lie in ``[0, 1]`` and higher means brighter on a standard display (bone white, lung dark). For DICOM
the DICOM grayscale pipeline of :mod:`.display` is applied (modality LUT, VOI transform ``voi``, polarity).

Metadata records the pixel spacing, view position, photometric interpretation, original size and which VOI
was applied. Patient-identifying header fields are never copied: the metadata is built from an allow-list.
Reading a DICOM switches pydicom's read-time value validation off for the process
(``pydicom.config.settings.reading_validation_mode = IGNORE``): its warnings and log messages quote the raw
value they reject, which in a damaged file can be a patient's name.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from monai.config import KeysCollection, PathLike
from monai.data import ImageReader
from monai.transforms import LoadImage, MapTransform
from monai.utils import ensure_tuple
from PIL import Image, UnidentifiedImageError
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder

from sista_monai.errors import ChestXrayReadError

from .display import VOI_MODES, _rescale_to_unit, dicom_to_display

__all__ = [
    "DICOM_SUFFIXES",
    "RASTER_SUFFIXES",
    "ChestXray",
    "read_chest_xray",
    "pixel_spacing",
    "ChestXrayReader",
    "LoadChestXray",
    "LoadChestXrayd",
    "LoadChestXrayD",
    "LoadChestXrayDict",
]

logger = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", "")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_MAX_PIXELS_DEFAULT = 16384 * 16384
_PHOTOMETRIC_NAMES = frozenset(
    {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_ICT",
     "YBR_RCT", "XYB", "HSV", "ARGB", "CMYK", "YBR_PARTIAL_422"}
)  # fmt: skip


@dataclass
class ChestXray:
    """A decoded, display-normalised radiograph before it becomes a MetaTensor.

    Attributes:
        pixels: ``(Rows, Columns)`` float32 array in ``[0, 1]``, higher = brighter on a standard display.
        meta: PHI-free metadata (see :func:`read_chest_xray`).
    """

    pixels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def pixel_spacing(ds: pydicom.Dataset) -> tuple[tuple[float, float], str]:
    """(row, column) spacing in mm and the tag it came from; zero or malformed values count as absent."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            spacing = (float(value[0]), float(value[1])) if value is not None else None
        except (TypeError, ValueError, IndexError):
            spacing = None
        if spacing and all(math.isfinite(s) and s > 0 for s in spacing):
            return spacing, keyword
    return (float("nan"), float("nan")), "none"


def _transposed_contiguous(array: np.ndarray) -> np.ndarray:
    """``array.T`` as a C-ordered array (free when ``array`` is already a transposed view).

    torch's blocked transpose copy is three to four times faster than ``np.ascontiguousarray(array.T)`` on
    detector-size images, and this copy is the whole cost of MONAI's (W, H) layout.
    """
    if array.T.flags.c_contiguous:
        return array.T
    if array.dtype in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32, np.float64):
        return torch.from_numpy(np.ascontiguousarray(array)).t().contiguous().numpy()
    return np.ascontiguousarray(array.T)


def _sniff_format(path: Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(132)
    if head.startswith(_PNG_MAGIC):
        return "PNG"
    if head.startswith(_JPEG_MAGIC):
        return "JPEG"
    return "DICOM"


def _read_raster(path: Path) -> ChestXray:
    """PNG/JPEG (MIMIC-CXR-JPG, IU X-ray): already display-windowed, so only scaled to ``[0, 1]``."""
    try:
        with Image.open(path) as image:
            image.load()
            fmt = image.format or path.suffix.lstrip(".").upper()
            mode = image.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image, dtype=np.float32)
                peak = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
                pixels = array / np.float32(peak)
            elif mode == "F":
                pixels = _rescale_to_unit(np.asarray(image), float(np.min(image)), float(np.max(image)))
            else:
                pixels = np.asarray(image.convert("L"), dtype=np.float32) / np.float32(255.0)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as err:
        raise ChestXrayReadError(
            path, f"cannot decode {path.suffix or 'image'} file ({type(err).__name__}: {err})"
        ) from err
    rows, columns = pixels.shape
    meta = {
        "format": fmt,
        "photometric_interpretation": "MONOCHROME2",
        "source_mode": mode,
        "voi_source": "none",
        "view_position": "",
        "modality": "",
        "transfer_syntax_uid": "",
        "bits_stored": 16 if mode.startswith("I") else 8,
        "pixel_spacing": (float("nan"), float("nan")),
        "spacing_source": "none",
        "rows": rows,
        "columns": columns,
    }
    return ChestXray(np.clip(pixels, 0.0, 1.0).astype(np.float32, copy=False), meta)


def _open_dicom(path: Path) -> pydicom.Dataset:
    # pydicom's read-time value validation logs and warns with the raw value it rejects; in a damaged file an
    # allow-listed element can swallow its neighbours (a patient name), so it is switched off for reading.
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        pass  # no 128-byte preamble: retried below with force=True, then validated
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for damaged files; all mean the same
        raise ChestXrayReadError(path, f"not a readable DICOM file ({type(err).__name__}: {str(err)[:200]})") from err
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as err:  # noqa: BLE001 - as above
        raise ChestXrayReadError(path, f"not a DICOM file ({type(err).__name__}: {str(err)[:200]})") from err
    if "PixelData" not in ds and not any(k in ds for k in ("SOPClassUID", "Modality", "Rows")):
        raise ChestXrayReadError(path, "not a DICOM file (no preamble and no recognisable DICOM elements)")
    if not hasattr(ds, "file_meta") or "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta = getattr(ds, "file_meta", pydicom.dataset.FileMetaDataset())
        ds.file_meta.TransferSyntaxUID = (
            pydicom.uid.ImplicitVRLittleEndian if ds.original_encoding[0] else pydicom.uid.ExplicitVRLittleEndian
        )
    return ds


def _header_int(ds: pydicom.Dataset, keyword: str, path: Path, default: int | None = None) -> int:
    """An integer header element; ``default`` when absent, empty (or 0, for counts that default to 1).

    pydicom keeps a value it cannot convert (an IS of ``"x"``) as text, so the conversion is checked here.

    Raises:
        ChestXrayReadError: the element is required and absent, or is not one integer.
    """
    value = ds.get(keyword)
    if value is None or value == "" or (default is not None and value == 0):
        if default is None:
            raise ChestXrayReadError(path, f"DICOM image is missing the {keyword} element")
        return default
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError) as err:
        raise ChestXrayReadError(path, f"the {keyword} element is not an integer") from err


def _check_dicom_image(ds: pydicom.Dataset, path: Path, max_pixels: int) -> None:
    if ds.get("PixelData") in (None, b""):
        sop = pydicom.uid.UID(str(ds.get("SOPClassUID", "") or ""))
        known = sop.name != str(sop)  # a registered SOP class; anything else may be damaged header bytes
        raise ChestXrayReadError(path, f"DICOM has no pixel data{f' (SOP Class: {sop.name})' if known else ''}")
    rows, columns, bits = (_header_int(ds, keyword, path) for keyword in ("Rows", "Columns", "BitsAllocated"))
    samples = _header_int(ds, "SamplesPerPixel", path, default=1)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        named = photometric if photometric in _PHOTOMETRIC_NAMES else "unknown"  # never echo damaged header bytes
        raise ChestXrayReadError(
            path,
            f"colour DICOM ({named}, {samples} samples per pixel): a chest radiograph must be MONOCHROME1 or "
            "MONOCHROME2",
        )
    frames = _header_int(ds, "NumberOfFrames", path, default=1)
    if frames != 1:
        raise ChestXrayReadError(path, f"multi-frame DICOM ({frames} frames): a single radiograph is expected")
    if rows < 1 or columns < 1 or rows * columns > max_pixels:
        raise ChestXrayReadError(path, f"implausible image size {rows}x{columns} in the header")
    if bits not in (1, 8, 16, 32, 64):
        raise ChestXrayReadError(path, f"BitsAllocated of {bits} is not 1, 8, 16, 32 or 64")
    syntax = ds.file_meta.TransferSyntaxUID
    if not syntax.is_transfer_syntax:
        raise ChestXrayReadError(path, "the file meta's TransferSyntaxUID is not a known transfer syntax")
    if not syntax.is_compressed:
        expected = (rows * columns * bits + 7) // 8
        if len(ds.PixelData) < expected:
            raise ChestXrayReadError(
                path,
                f"pixel data holds {len(ds.PixelData)} bytes but Rows x Columns x BitsAllocated need {expected} "
                "(truncated file or wrong size header)",
            )
    else:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError as err:
            raise ChestXrayReadError(path, f"no decoder exists for transfer syntax {syntax.name} ({syntax})") from err
        if not decoder.is_available:
            missing = (
                "; ".join(f"{k}: {', '.join(v)}" for k, v in decoder.missing_dependencies.items())
                if isinstance(decoder.missing_dependencies, dict)
                else str(decoder.missing_dependencies)
            )
            raise ChestXrayReadError(
                path, f"no decoder available for transfer syntax {syntax.name} ({syntax}); missing: {missing}"
            )


def read_chest_xray(
    path: PathLike | str,
    voi: str = "auto",
    percentiles: tuple[float, float] = (0.5, 99.5),
    window_index: int = 0,
    max_pixels: int = _MAX_PIXELS_DEFAULT,
) -> ChestXray:
    """Read one chest radiograph (DICOM, PNG or JPEG) into a display-normalised ``(Rows, Columns)`` array.

    The format is recognised from the file's content (PNG/JPEG signatures; anything else is read as DICOM,
    with or without the 128-byte preamble), not from its name.

    Args:
        path: the file.
        voi: DICOM VOI mode, one of :data:`VOI_MODES`.
        percentiles: percentile window bounds used by ``voi="percentile"`` (and by ``"auto"`` when the file
            has neither a VOI LUT nor window tags).
        window_index: which of several windows (or VOI LUT items) to use.
        max_pixels: header sizes above this many pixels are refused before any decoding.

    Returns:
        A :class:`ChestXray`. ``meta`` holds ``format``, ``rows``, ``columns``, ``pixel_spacing`` (row,
        column) in mm (NaN when absent), ``spacing_source``, ``view_position``, ``photometric_interpretation``,
        ``modality``, ``bits_stored``, ``transfer_syntax_uid`` and ``voi_source``; no patient field.

    Raises:
        ChestXrayReadError: missing, empty, truncated or non-image file, no pixel data, colour or
            multi-frame DICOM, an undecodable transfer syntax, implausible or malformed header values (size,
            bits, rescale, window); the message names the file and the reason, never a header value's text.
        ValueError: ``voi`` is not one of :data:`VOI_MODES`.
    """
    if voi not in VOI_MODES:
        raise ValueError(f"voi must be one of {VOI_MODES}, got {voi!r}")
    path = Path(path)
    if not path.is_file():
        raise ChestXrayReadError(path, "file not found")
    if path.stat().st_size == 0:
        raise ChestXrayReadError(path, "empty file")
    fmt = _sniff_format(path)
    if fmt != "DICOM":
        return _read_raster(path)

    try:
        return _read_dicom(path, voi, percentiles, window_index, max_pixels)
    except ChestXrayReadError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError, NotImplementedError) as err:
        # pydicom converts elements lazily: a damaged element (even its VR) fails wherever it is first read
        raise ChestXrayReadError(path, f"malformed DICOM header ({type(err).__name__})") from err


def _read_dicom(
    path: Path, voi: str, percentiles: tuple[float, float], window_index: int, max_pixels: int
) -> ChestXray:
    """The DICOM branch of :func:`read_chest_xray`."""
    ds = _open_dicom(path)
    _check_dicom_image(ds, path, max_pixels)
    try:
        stored = ds.pixel_array
    except Exception as err:  # noqa: BLE001 - decoder plugins raise assorted types for damaged streams
        raise ChestXrayReadError(
            path, f"pixel data cannot be decoded ({type(err).__name__}: {str(err)[:200]})"
        ) from err
    if stored.ndim != 2:
        raise ChestXrayReadError(path, f"decoded pixel array has shape {stored.shape}, expected (rows, columns)")
    # Transpose the stored integers (2 bytes a pixel, before any float copy) into MONAI's (W, H) layout; every
    # later step writes C-ordered outputs, so the array handed to MONAI needs no further copy.
    display_wh, voi_source = dicom_to_display(
        ds, _transposed_contiguous(stored), voi, percentiles, window_index, source=path
    )
    pixels = display_wh.T
    spacing, spacing_source = pixel_spacing(ds)
    meta = {
        "format": "DICOM",
        "photometric_interpretation": str(ds.get("PhotometricInterpretation", "")).strip().upper(),
        "presentation_lut_shape": str(ds.get("PresentationLUTShape", "") or "").strip().upper(),
        "voi_source": voi_source,
        "view_position": str(ds.get("ViewPosition", "") or "").strip().upper(),
        "modality": str(ds.get("Modality", "") or ""),
        "transfer_syntax_uid": str(ds.file_meta.TransferSyntaxUID),
        "bits_stored": _header_int(ds, "BitsStored", path, default=int(ds.BitsAllocated)),
        "pixel_spacing": spacing,
        "spacing_source": spacing_source,
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
    }
    return ChestXray(pixels, meta)


class ChestXrayReader(ImageReader):
    """MONAI :class:`~monai.data.ImageReader` for chest radiographs, so ``LoadImage(reader=...)`` works.

    ``get_data`` returns the ``(W, H)`` array (MONAI's layout, see the module docstring) and PHI-free metadata
    including ``spatial_shape`` and an affine whose diagonal holds the column and row spacing when known.

    Args:
        voi: see :func:`read_chest_xray`.
        percentiles: see :func:`read_chest_xray`.
        window_index: see :func:`read_chest_xray`.
        max_pixels: see :func:`read_chest_xray`.
    """

    def __init__(
        self,
        voi: str = "auto",
        percentiles: tuple[float, float] = (0.5, 99.5),
        window_index: int = 0,
        max_pixels: int = _MAX_PIXELS_DEFAULT,
    ) -> None:
        super().__init__()
        if voi not in VOI_MODES:
            raise ValueError(f"voi must be one of {VOI_MODES}, got {voi!r}")
        if not 0.0 <= percentiles[0] < percentiles[1] <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
        self.voi = voi
        self.percentiles = (float(percentiles[0]), float(percentiles[1]))
        self.window_index = int(window_index)
        self.max_pixels = int(max_pixels)

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """True for DICOM (``.dcm``, ``.dicom``, ``.dic``, no suffix), PNG and JPEG file names."""
        return all(Path(f).suffix.lower() in DICOM_SUFFIXES + RASTER_SUFFIXES for f in ensure_tuple(filename))

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> list[ChestXray] | ChestXray:
        """Decode and normalise one file (or several, stacked by :meth:`get_data`)."""
        images = [
            read_chest_xray(
                f,
                voi=kwargs.get("voi", self.voi),
                percentiles=kwargs.get("percentiles", self.percentiles),
                window_index=kwargs.get("window_index", self.window_index),
                max_pixels=self.max_pixels,
            )
            for f in ensure_tuple(data)
        ]
        return images if len(images) > 1 else images[0]

    def get_data(self, img: ChestXray | Sequence[ChestXray]) -> tuple[np.ndarray, dict]:
        """Return the ``(W, H)`` array (or ``(N, W, H)`` for several files) and its metadata."""
        images = list(ensure_tuple(img))
        arrays = [_transposed_contiguous(image.pixels) for image in images]
        meta = dict(images[0].meta)
        row_spacing, column_spacing = meta["pixel_spacing"]
        affine = np.eye(4, dtype=np.float64)
        if math.isfinite(row_spacing) and math.isfinite(column_spacing):
            affine[0, 0], affine[1, 1] = column_spacing, row_spacing
        meta["affine"] = affine
        meta["original_affine"] = affine.copy()
        meta["spatial_shape"] = np.asarray(arrays[0].shape)
        if len(arrays) == 1:
            meta["original_channel_dim"] = float("nan")
            return arrays[0], meta
        if any(a.shape != arrays[0].shape for a in arrays):
            raise ChestXrayReadError(
                ", ".join(str(getattr(i, "meta", {}).get("filename_or_obj", "?")) for i in images),
                "files stacked as channels must have the same size",
            )
        meta["original_channel_dim"] = 0
        return np.stack(arrays, axis=0), meta


class LoadChestXray(LoadImage):
    """Load a chest radiograph as a ``(1, W, H)`` float32 MetaTensor in ``[0, 1]`` (higher = brighter).

    A :class:`monai.transforms.LoadImage` bound to :class:`ChestXrayReader`; read errors are never swallowed
    into MONAI's generic "cannot find a suitable reader" error but surface as
    :class:`~sista_monai.transforms.ChestXrayReadError` naming the file and the reason.

    Args:
        voi: DICOM VOI mode: ``"auto"`` (VOI LUT, else window tags, else percentile window), ``"window"``,
            ``"percentile"`` or ``"none"``.
        percentiles: percentile window bounds.
        window_index: which of several windows to apply.
        max_pixels: refuse headers claiming more pixels than this.
        image_only: return only the image (default) or ``(image, meta)``.
        ensure_channel_first: add the channel axis (default).
        kwargs: further :class:`~monai.transforms.LoadImage` arguments.
    """

    def __init__(
        self,
        voi: str = "auto",
        percentiles: tuple[float, float] = (0.5, 99.5),
        window_index: int = 0,
        max_pixels: int = _MAX_PIXELS_DEFAULT,
        image_only: bool = True,
        ensure_channel_first: bool = True,
        dtype: Any = np.float32,
        **kwargs: Any,
    ) -> None:
        self.chest_reader = ChestXrayReader(voi, percentiles, window_index, max_pixels)
        super().__init__(
            reader=self.chest_reader,
            image_only=image_only,
            ensure_channel_first=ensure_channel_first,
            dtype=dtype,
            **kwargs,
        )

    def __call__(self, filename: Sequence[PathLike] | PathLike, reader: ImageReader | None = None):
        """Load ``filename`` (a path or a sequence of paths stacked as channels)."""
        if isinstance(filename, (str, os.PathLike)):
            filename = str(filename)
        return super().__call__(filename, reader=reader or self.chest_reader)


class LoadChestXrayd(MapTransform):
    """Dictionary form of :class:`LoadChestXray`.

    Args:
        keys: keys holding file paths.
        allow_missing_keys: do not raise when a key is absent.
        kwargs: :class:`LoadChestXray` arguments.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadChestXray(**kwargs)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


LoadChestXrayD = LoadChestXrayDict = LoadChestXrayd
