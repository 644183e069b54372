"""The generated detector-size DICOMs the data benchmarks read (:mod:`sista_monai.bench.data` and
:mod:`sista_monai.bench.data_scale`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

__all__ = ["write_detector_dicom"]


def write_detector_dicom(path: Path, rows: int = 2500, columns: int = 2048, seed: int = 0, window: bool = True) -> Path:
    """Write a detector-size 16-bit (12 bits stored) MONOCHROME2 DICOM with smooth structure and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:columns].astype(np.float32)
    body = np.exp(-(((xx - columns / 2) / (0.35 * columns)) ** 4) - (((yy - rows / 2) / (0.45 * rows)) ** 4))
    lungs = np.exp(
        -(((np.abs(xx - columns / 2) - 0.2 * columns) / (0.1 * columns)) ** 2)
        - ((yy - 0.45 * rows) / (0.2 * rows)) ** 2
    )
    image = 3000 * body - 1500 * lungs + rng.normal(0, 40, (rows, columns))
    stored = np.clip(image + 500, 0, 4095).astype(np.uint16)
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[f"bench-{seed}"])
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PhotometricInterpretation, ds.SamplesPerPixel = "DX", "MONOCHROME2", 1
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.ImagerPixelSpacing = [0.139, 0.139]
    if window:
        ds.WindowCenter, ds.WindowWidth = 2000, 3500
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
