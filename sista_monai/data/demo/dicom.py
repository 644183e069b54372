"""DICOM encoding of the demo images the way scanners vary it, and the fake identifiers planted for privacy tests.

:data:`ENCODING_PROFILES` vary MONOCHROME1/2, bits stored, rescale slope and intercept, window tags,
PixelSpacing or ImagerPixelSpacing and the transfer syntax (explicit/implicit VR, RLE Lossless, JPEG 2000
Lossless). UIDs are derived from the seed (:func:`_uid`), so the files are byte-for-byte reproducible.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from .plan import _STREAM_PATIENT_PHI, _STREAM_PHI, _pick, _rng

__all__ = ["ENCODING_PROFILES", "EncodingProfile"]

_FIELD_OF_VIEW_MM = 430.0
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "sista-monai/synthetic-demo-data")

_SOP_CLASS = {
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
}


def _uid(seed: int, kind: str, study_id: str) -> str:
    """A UID that depends only on the seed, its kind and the study.

    ``2.25.`` followed by the integer of a name-based (SHA-1, version 5) UUID, the UUID-derived UID form of
    DICOM PS3.5 B.2. (pydicom's ``generate_uid(prefix=None)`` ignores its entropy sources and is random.)
    """
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, f'{seed}/{kind}/{study_id}').int}"


@dataclass(frozen=True)
class EncodingProfile:
    """How one kind of scanner stores its pixels.

    Attributes:
        name: ManufacturerModelName written to the file.
        modality: ``"DX"`` (Digital X-Ray, rescale tags always present) or ``"CR"``.
        photometric: ``"MONOCHROME1"`` (stored values inverted: bone is low) or ``"MONOCHROME2"``.
        bits_allocated: 8 or 16.
        bits_stored: 8, 10, 12, 14 or 16.
        stored_range: fraction of the full stored scale the data occupies (low, high).
        rescale: (RescaleSlope, RescaleIntercept), or ``None`` to leave the tags out.
        window: write WindowCenter/WindowWidth covering the data range.
        spacing_tag: ``"PixelSpacing"`` or ``"ImagerPixelSpacing"``.
        transfer_syntax: the transfer syntax UID.
    """

    name: str
    modality: str
    photometric: str
    bits_allocated: int
    bits_stored: int
    stored_range: tuple[float, float]
    rescale: tuple[float, float] | None
    window: bool
    spacing_tag: str
    transfer_syntax: UID


_M1, _M2, _PS, _IPS = "MONOCHROME1", "MONOCHROME2", "PixelSpacing", "ImagerPixelSpacing"
_EXPLICIT, _IMPLICIT, _RLE, _J2K = ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, JPEG2000Lossless

#: Encodings spread over the studies (each appears n/12 times, in a seeded order).
ENCODING_PROFILES: tuple[EncodingProfile, ...] = tuple(
    EncodingProfile(*row)
    for row in (
        # name          modality, PI, alloc, stored, stored range, rescale, window, spacing tag, syntax
        ("Demo DR 12", "DX", _M2, 16, 12, (0.05, 0.92), (1.0, 0.0), True, _IPS, _EXPLICIT),
        ("Demo CR 12i", "CR", _M1, 16, 12, (0.08, 0.95), None, True, _PS, _EXPLICIT),
        ("Demo CR 8", "CR", _M2, 8, 8, (0.03, 0.97), None, False, _PS, _IMPLICIT),
        ("Demo DR 16r", "DX", _M2, 16, 16, (0.02, 0.90), (0.5, -1024.0), True, _IPS, _RLE),
        ("Demo DR 16i", "DX", _M1, 16, 16, (0.05, 0.85), (1.0, 0.0), False, _IPS, _J2K),
        ("Demo CR 14", "CR", _M2, 16, 14, (0.04, 0.80), (1.0, -512.0), False, _PS, _RLE),
        ("Demo CR 8i", "CR", _M1, 8, 8, (0.05, 0.95), None, True, _PS, _EXPLICIT),
        ("Demo DR 12j", "DX", _M2, 16, 12, (0.10, 0.98), (2.0, 0.0), True, _IPS, _J2K),
        ("Demo DR 12ir", "DX", _M1, 16, 12, (0.02, 0.88), (1.0, 0.0), True, _IPS, _RLE),
        ("Demo CR 10", "CR", _M2, 16, 10, (0.06, 0.94), None, False, _PS, _IMPLICIT),
        ("Demo DR 8", "DX", _M2, 8, 8, (0.04, 0.96), (1.0, 0.0), True, _IPS, _EXPLICIT),
        ("Demo DR 16", "DX", _M2, 16, 16, (0.03, 0.93), (1.0, -32768.0), True, _IPS, _J2K),
    )
)


def _ds(value: float) -> str:
    """A Decimal String value without float noise."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def _stored_pixels(
    image: np.ndarray, profile: EncodingProfile, rng: np.random.Generator
) -> tuple[np.ndarray, int, int]:
    """Stored values for a display image: its range within the bit depth, inverted for MONOCHROME1."""
    full = (1 << profile.bits_stored) - 1
    low = int(round(full * (profile.stored_range[0] + rng.uniform(0.0, 0.02))))
    high = int(round(full * (profile.stored_range[1] - rng.uniform(0.0, 0.02))))
    values = image if profile.photometric == "MONOCHROME2" else 1.0 - image
    stored = np.rint(low + values * (high - low))
    dtype = np.uint8 if profile.bits_allocated == 8 else np.uint16
    return stored.astype(dtype), low, high


def _packbits_rows(plane: np.ndarray) -> bytes:
    """One RLE Lossless segment (DICOM PS3.5 G.3.1): PackBits of a byte plane, row by row, vectorised.

    Runs of two or more equal bytes become replicate packets (at most 128 bytes each), maximal stretches of
    single bytes become literal packets (at most 128 bytes each), no packet crosses a row, and an odd-length
    segment is padded with a zero byte. This is the packing of pydicom's own RLE encoder, byte for byte,
    without its per-row Python loop.
    """
    columns = plane.shape[1]
    data = np.ascontiguousarray(plane, dtype=np.uint8).ravel()
    size = data.size
    index = np.arange(size)
    row_start = index % columns == 0
    run_start = row_start.copy()
    run_start[1:] |= data[1:] != data[:-1]
    starts = np.flatnonzero(run_start)
    run_of = np.cumsum(run_start) - 1
    single = (np.diff(np.append(starts, size)) == 1)[run_of]
    after_single = np.concatenate(([False], single[:-1]))
    block_start = single & (row_start | ~after_single)
    in_block = index - np.maximum.accumulate(np.where(block_start, index, 0))
    in_run = index - starts[run_of]
    packet_start = np.where(single, in_block % 128 == 0, in_run % 128 == 0)
    packets = np.flatnonzero(packet_start)
    length = np.diff(np.append(packets, size))
    literal = single[packets]
    # a replicate packet of one byte (the rest of a run after 128-byte packets) has header 0: a literal of 1
    header = np.where(literal, length - 1, (257 - length) & 0xFF).astype(np.uint8)
    written = 1 + np.where(literal, length, 1)
    offset = np.concatenate(([0], np.cumsum(written)[:-1]))
    total = int(written.sum())
    out = np.zeros(total + total % 2, dtype=np.uint8)
    out[offset] = header
    out[offset[~literal] + 1] = data[packets[~literal]]
    literal_bytes = np.flatnonzero(single)
    packet = (np.cumsum(packet_start) - 1)[literal_bytes]
    out[offset[packet] + 1 + literal_bytes - packets[packet]] = data[literal_bytes]
    return out.tobytes()


def _rle_lossless_frame(stored: np.ndarray) -> bytes:
    """An RLE Lossless frame (PS3.5 G.2): the 64-byte header, then one segment per byte plane, MSB first."""
    if stored.dtype.itemsize == 1:
        planes = [stored]
    else:
        planes = [(stored >> 8).astype(np.uint8), (stored & 0xFF).astype(np.uint8)]
    segments = [_packbits_rows(plane) for plane in planes]
    header = np.zeros(16, dtype="<u4")
    header[0] = len(segments)
    header[1 : 1 + len(segments)] = 64 + np.concatenate(([0], np.cumsum([len(s) for s in segments])[:-1]))
    return header.tobytes() + b"".join(segments)


def _dicom_dataset(
    stored: np.ndarray, low: int, high: int, profile: EncodingProfile, header: dict[str, Any], size: int
) -> Dataset:
    sop_class = _SOP_CLASS[profile.modality]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = header["SOPInstanceUID"]
    ds.file_meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if profile.transfer_syntax == ImplicitVRLittleEndian else ExplicitVRLittleEndian
    )
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = header["SOPInstanceUID"]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = header["StudyDate"]
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = header["AccessionNumber"]
    ds.Modality = profile.modality
    if profile.modality == "DX":  # type 1 attributes of the DX Image Module
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = -1 if profile.photometric == "MONOCHROME2" else 1
        ds.PresentationLUTShape = "IDENTITY" if profile.photometric == "MONOCHROME2" else "INVERSE"
    ds.Manufacturer = "SISTA-MONAI synthetic demo"
    if header.get("InstitutionName"):
        ds.InstitutionName = header["InstitutionName"]
    ds.ReferringPhysicianName = header["ReferringPhysicianName"]
    ds.StudyDescription = header["StudyDescription"]
    ds.SeriesDescription = header["StudyDescription"]
    ds.ManufacturerModelName = profile.name
    ds.PatientName = header["PatientName"]
    ds.PatientID = header["PatientID"]
    ds.PatientBirthDate = header["PatientBirthDate"]
    ds.PatientSex = header["PatientSex"]
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = header["ViewPosition"]
    ds.StudyInstanceUID = header["StudyInstanceUID"]
    ds.SeriesInstanceUID = header["SeriesInstanceUID"]
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["L", "F"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = profile.photometric
    ds.Rows = ds.Columns = size
    spacing = _ds(_FIELD_OF_VIEW_MM / size)
    setattr(ds, profile.spacing_tag, [spacing, spacing])
    ds.BitsAllocated = profile.bits_allocated
    ds.BitsStored = profile.bits_stored
    ds.HighBit = profile.bits_stored - 1
    ds.PixelRepresentation = 0
    if profile.window:
        slope, intercept = profile.rescale or (1.0, 0.0)
        out_low, out_high = sorted((slope * low + intercept, slope * high + intercept))
        ds.WindowCenter = _ds((out_low + out_high) / 2.0)
        ds.WindowWidth = _ds(out_high - out_low + 1.0)
    if profile.rescale is not None:
        ds.RescaleIntercept = _ds(profile.rescale[1])
        ds.RescaleSlope = _ds(profile.rescale[0])
        ds.RescaleType = "US"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    if profile.transfer_syntax == RLELossless:
        ds.PixelData = encapsulate([_rle_lossless_frame(stored)])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.file_meta.TransferSyntaxUID = RLELossless
    elif profile.transfer_syntax == JPEG2000Lossless:
        ds.PixelData = stored.tobytes()
        ds.compress(JPEG2000Lossless, stored, generate_instance_uid=False)
    else:
        ds.PixelData = stored.tobytes()
    return ds


# ------------------------------------------------------------------------------------------ planted PHI
_PATIENT_GIVEN = ("Perpetua", "Ignatius", "Wilhelmina", "Cornelius", "Ottoline", "Barnaby", "Evangeline", "Leopold")
_PATIENT_FAMILY = (
    "Vasquarelli",
    "Thistlewaite",
    "Brunnhofer",
    "Zeferelli",
    "Ostrovidova",
    "Pettigrove",
    "Kallistratou",
    "Wyndecombe",
)
_DOCTOR_GIVEN = ("Ludmila", "Casimir", "Hyacinth", "Ambrosine", "Leocadia", "Florizel")
_DOCTOR_FAMILY = ("Quenby", "Trevelyan-Oakes", "Szczepanik", "Abernathy-Vole", "Rosencrantz", "Mallinckrodt")
_PHI_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "InstitutionName",
    "ReferringPhysicianName",
)
_INSTITUTIONS = (
    "Quarrendon Vale Infirmary",
    "Hollowmere Radiology Institute",
    "St Ysolde Thackeray Hospital",
    "Brackenholt Chest Clinic",
)


def _patient_phi(seed: int, patient: int) -> dict[str, str]:
    rng = _rng(seed, _STREAM_PATIENT_PHI, patient)
    given, family = _pick(rng, _PATIENT_GIVEN), _pick(rng, _PATIENT_FAMILY)
    birth = datetime.date(1930, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 60 * 365)))
    return {
        "PatientName": f"{family}^{given}",
        "PatientID": f"QX{int(rng.integers(10**6, 10**7))}Z",
        "PatientBirthDate": birth.strftime("%Y%m%d"),
    }


def _study_phi(seed: int, index: int) -> dict[str, str]:
    rng = _rng(seed, _STREAM_PHI, index)
    referring = (_pick(rng, _DOCTOR_GIVEN), _pick(rng, _DOCTOR_FAMILY))
    reporting = (_pick(rng, _DOCTOR_GIVEN), _pick(rng, _DOCTOR_FAMILY))
    return {
        "AccessionNumber": f"ACZ{int(rng.integers(10**7, 10**8))}",
        "InstitutionName": _pick(rng, _INSTITUTIONS),
        "ReferringPhysicianName": f"{referring[1]}^{referring[0]}",
        "report_name": f"{reporting[0]} {reporting[1]}",
    }
