"""Shared test fixtures: the real third-party samples and a writer of small synthetic DICOM files."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from sista_monai.offline import block_network, network_blocked, unblock_network, write_sitecustomize

REPO_ROOT = Path(__file__).resolve().parents[1]
REALDATA = REPO_ROOT.parent / "shared" / "realdata"


@pytest.fixture(scope="session", autouse=True)
def offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """No test may reach beyond this machine, in the test process or in any Python subprocess it starts.

    In this process :func:`sista_monai.offline.block_network` makes connecting, sending or resolving names beyond
    loopback raise; a ``sitecustomize.py`` first on ``PYTHONPATH`` installs the same guard in every Python
    subprocess (bundle runs, ``torchrun`` and its workers); Hugging Face libraries are told to stay offline.
    Yields the folder of the ``sitecustomize.py``.
    """
    site = write_sitecustomize(tmp_path_factory.mktemp("offline_site"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        patch.setenv("HF_DATASETS_OFFLINE", "1")
        patch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p))
        already = network_blocked()
        block_network()
        try:
            yield site
        finally:
            if not already:
                unblock_network()


@pytest.fixture(scope="session")
def realdata() -> Path:
    """``../shared/realdata`` (beside the repository); tests needing it skip with a message when absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real third-party samples not present at {REALDATA} (only on the team's machines)")
    return REALDATA


def write_dicom(path: Path, pixels: np.ndarray, preamble: bool = True, **elements: Any) -> Path:
    """Write ``pixels`` (rows, columns) as an uncompressed grayscale DICOM with extra ``elements``.

    Element keywords given as ``None`` are left out. Unsigned pixel representation unless the array is signed.
    """
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    arr = np.ascontiguousarray(pixels)
    bits = 8 if arr.dtype.itemsize == 1 else 16
    defaults = {
        "Rows": arr.shape[0],
        "Columns": arr.shape[1],
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "BitsAllocated": bits,
        "BitsStored": bits,
        "HighBit": bits - 1,
        "PixelRepresentation": int(np.issubdtype(arr.dtype, np.signedinteger)),
    }
    defaults.update(elements)
    for keyword, value in defaults.items():
        if value is not None:
            setattr(ds, keyword, value)
    ds.PixelData = arr.tobytes()
    ds.save_as(path, enforce_file_format=preamble)
    return path


@pytest.fixture
def dicom_writer(tmp_path: Path) -> Callable[..., Path]:
    """``dicom_writer(name, pixels, **elements)`` writes a DICOM into the test's temporary folder."""

    def _write(name: str, pixels: np.ndarray, **elements: Any) -> Path:
        return write_dicom(tmp_path / name, pixels, **elements)

    return _write


TINY_VIT = {
    "img_size": 32,
    "patch_size": 16,
    "preset": "tiny",
    "hidden_size": 16,
    "mlp_dim": 32,
    "num_layers": 1,
    "num_heads": 2,
}
"""A ViT encoder small enough for unit tests (one block of width 16 on a 2x2 patch grid)."""


@pytest.fixture
def tiny_vit() -> Callable[..., Any]:
    """``tiny_vit(**overrides)`` builds a :class:`~sista_monai.networks.ViTImageEncoder` of :data:`TINY_VIT`."""
    from sista_monai.networks import ViTImageEncoder

    def _build(**kwargs: Any) -> ViTImageEncoder:
        return ViTImageEncoder(**{**TINY_VIT, **kwargs})

    return _build
