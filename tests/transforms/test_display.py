"""Tests of the DICOM display pipeline: VOI windows, modality and VOI LUTs, percentile window and polarity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset

from sista_monai.transforms import ChestXrayReadError, LoadChestXray, apply_window

# ---------------------------------------------------------------- real files


def test_monochrome1_header_inverts_the_same_pixels(realdata: Path, tmp_path: Path) -> None:
    original = realdata / "other_dicom" / "txv_Fake_MONOHR1_MODIFIED_HEADER.dcm"
    ds = pydicom.dcmread(original)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    ds.PhotometricInterpretation = "MONOCHROME2"
    as_mono2 = tmp_path / "as_mono2.dcm"
    ds.save_as(as_mono2)
    inverted = LoadChestXray()(original)
    plain = LoadChestXray()(as_mono2)
    torch.testing.assert_close(inverted, 1.0 - plain, rtol=0, atol=1e-6)
    # The header is a lie: the pixels are MONOCHROME2, so following the header makes the spine dark.
    centre = plain[0, 480:544, 300:600].mean()
    assert centre > plain[0, 200:330, 300:600].mean()
    assert inverted[0, 480:544, 300:600].mean() < inverted[0, 200:330, 300:600].mean()


def test_window_tags_change_the_output_as_documented(realdata: Path, tmp_path: Path) -> None:
    path = realdata / "other_dicom" / "CR-MONO1-10-chest.dcm"  # WindowCenter 550, WindowWidth 1024, MONO1
    ds = pydicom.dcmread(path, force=True)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian  # the file has no preamble/meta
    stored = ds.pixel_array.astype(np.float64)
    loaded = LoadChestXray()(path)[0].numpy().T
    assert LoadChestXray()(path).meta["voi_source"] == "window"
    expected = 1.0 - np.clip((stored - 549.5) / 1023.0 + 0.5, 0.0, 1.0)
    np.testing.assert_allclose(loaded, expected, atol=1e-5)

    ds.WindowCenter, ds.WindowWidth = 300, 201
    narrow = tmp_path / "narrow.dcm"
    ds.save_as(narrow, enforce_file_format=True)
    narrowed = LoadChestXray()(narrow)[0].numpy().T
    np.testing.assert_allclose(narrowed, 1.0 - np.clip((stored - 299.5) / 200.0 + 0.5, 0.0, 1.0), atol=1e-5)
    assert not np.allclose(narrowed, loaded)

    percentile = LoadChestXray(voi="percentile")(path)
    assert percentile.meta["voi_source"] == "percentile"
    low, high = np.percentile(stored, [0.5, 99.5])
    np.testing.assert_allclose(percentile[0].numpy().T, 1.0 - np.clip((stored - low) / (high - low), 0, 1), atol=1e-5)


# ---------------------------------------------------------------- known answers on synthetic arrays


def test_linear_window_known_answers() -> None:
    values = np.array([99.0, 99.5, 100.0, 199.5, 299.5, 300.0])
    # centre 200, width 201: (x - 199.5) / 200 + 0.5, clipped
    out = apply_window(values, 200, 201)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.0025, 0.5, 1.0, 1.0], atol=1e-7)
    np.testing.assert_allclose(apply_window(np.array([0.0, 50.0, 100.0]), 50, 100, "LINEAR_EXACT"), [0.0, 0.5, 1.0])
    sig = apply_window(np.array([50.0, 75.0]), 50, 100, "SIGMOID")
    np.testing.assert_allclose(sig, [0.5, 1.0 / (1.0 + np.exp(-1.0))], rtol=1e-6)
    with pytest.raises(ValueError, match="VOILUTFunction"):
        apply_window(values, 1, 2, "CUBIC")


def test_rescale_then_window(dicom_writer) -> None:
    stored = np.array([[0, 50], [100, 150]], dtype=np.uint16)
    path = dicom_writer("rescale.dcm", stored, RescaleSlope=2, RescaleIntercept=-100, WindowCenter=50, WindowWidth=101)
    # modality values: [-100, 0, 100, 200]; window [-0.5 .. 99.5] maps (v - 49.5) / 100 + 0.5
    expected_rc = np.clip((np.array([[-100.0, 0.0], [100.0, 200.0]]) - 49.5) / 100.0 + 0.5, 0, 1)
    image = LoadChestXray()(path)
    np.testing.assert_allclose(image[0].numpy().T, expected_rc, atol=1e-6)
    assert image.meta["voi_source"] == "window"
    np.testing.assert_allclose(expected_rc, [[0.0, 0.005], [1.0, 1.0]], atol=1e-9)


def test_modality_lut_sequence_then_no_voi(dicom_writer) -> None:
    stored = np.array([[0, 1], [2, 3]], dtype=np.uint16)
    item = Dataset()
    item.LUTDescriptor = [4, 0, 16]
    item.ModalityLUTType = "US"
    item.add_new(0x00283006, "US", [10, 20, 40, 80])  # LUTData
    path = dicom_writer("mlut.dcm", stored, ModalityLUTSequence=[item])
    image = LoadChestXray(voi="none")(path)
    np.testing.assert_allclose(image[0].numpy().T, [[0.0, 10 / 70], [30 / 70, 1.0]], atol=1e-6)


def test_voi_lut_sequence_has_priority_over_window(dicom_writer) -> None:
    stored = np.array([[0, 1], [2, 3]], dtype=np.uint16)
    item = Dataset()
    item.LUTDescriptor = [4, 0, 8]
    item.add_new(0x00283006, "US", [0, 51, 102, 255])  # LUTData
    path = dicom_writer("voilut.dcm", stored, VOILUTSequence=[item], WindowCenter=1, WindowWidth=2)
    image = LoadChestXray()(path)
    assert image.meta["voi_source"] == "voi_lut"
    np.testing.assert_allclose(image[0].numpy().T, [[0.0, 0.2], [0.4, 1.0]], atol=1e-6)
    windowed = LoadChestXray(voi="window")(path)
    assert windowed.meta["voi_source"] == "window"


def test_polarity_rules(dicom_writer) -> None:
    stored = np.array([[0, 255]], dtype=np.uint8)
    mono2 = LoadChestXray(voi="none")(dicom_writer("m2.dcm", stored))
    mono1 = LoadChestXray(voi="none")(dicom_writer("m1.dcm", stored, PhotometricInterpretation="MONOCHROME1"))
    inverse = LoadChestXray(voi="none")(dicom_writer("inv.dcm", stored, PresentationLUTShape="INVERSE"))
    both = LoadChestXray(voi="none")(
        dicom_writer("both.dcm", stored, PhotometricInterpretation="MONOCHROME1", PresentationLUTShape="INVERSE")
    )
    np.testing.assert_allclose(mono2[0, :, 0].numpy(), [0.0, 1.0])
    np.testing.assert_allclose(mono1[0, :, 0].numpy(), [1.0, 0.0])
    np.testing.assert_allclose(inverse[0, :, 0].numpy(), [1.0, 0.0])
    np.testing.assert_allclose(both[0, :, 0].numpy(), [1.0, 0.0])


def test_percentile_window_known_answer(dicom_writer) -> None:
    stored = np.arange(101, dtype=np.uint16).reshape(1, 101)
    image = LoadChestXray(voi="percentile", percentiles=(10, 90))(dicom_writer("ramp.dcm", stored))
    assert image.meta["voi_source"] == "percentile"
    np.testing.assert_allclose(image[0, :, 0].numpy(), np.clip((np.arange(101) - 10) / 80, 0, 1), atol=1e-6)
    with pytest.raises(ChestXrayReadError, match="ramp.dcm: voi='window' but the file has no WindowCenter"):
        LoadChestXray(voi="window")(dicom_writer("ramp.dcm", stored))
