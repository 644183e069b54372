"""Tests of the chest X-ray loader: real files, known LUT/VOI answers, layout, privacy and bad input."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import UID, JPEGLosslessSV1

from sista_monai.transforms import (
    ChestXrayReader,
    ChestXrayReadError,
    LoadChestXray,
    LoadChestXrayD,
    LoadChestXrayd,
    LoadChestXrayDict,
    dicom_to_display,
    read_chest_xray,
)

CHEST_DICOMS = [
    "other_dicom/CR-MONO1-10-chest.dcm",
    "other_dicom/RG1_J2KI.dcm",
    "other_dicom/nih_gcp_*.dcm",
    "rsna/dicoms/*.dcm",
    "siim/dicoms/*.dcm",
]


def _all_dicoms(root: Path) -> list[Path]:
    return sorted(root.rglob("*.dcm"))


def _chest_dicoms(root: Path) -> list[Path]:
    return sorted(p for pattern in CHEST_DICOMS for p in root.glob(pattern))


# ---------------------------------------------------------------- real files


def test_every_real_dicom_loads(realdata: Path) -> None:
    loader = LoadChestXray()
    files = _all_dicoms(realdata)
    assert len(files) >= 17
    syntaxes = set()
    for path in files:
        image = loader(path)
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        assert isinstance(image, MetaTensor)
        assert image.dtype == torch.float32
        assert tuple(image.shape) == (1, int(ds.Columns), int(ds.Rows)), path.name
        assert torch.isfinite(image).all()
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
        assert float(image.max()) - float(image.min()) > 0.5, f"{path.name} has almost no contrast"
        assert image.meta["rows"] == int(ds.Rows) and image.meta["columns"] == int(ds.Columns)
        syntaxes.add(image.meta["transfer_syntax_uid"])
    # JPEG Baseline, JPEG Lossless, JPEG 2000 (lossy and lossless), implicit VR uncompressed
    for uid in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"):
        assert uid in syntaxes


def test_mediastinum_brighter_than_lungs_on_real_chests(realdata: Path) -> None:
    """On frontal chest films the central band (spine, mediastinum) is brighter than the lung fields.

    Compared with the mean of the two lateral bands, because a consolidated lung can be as bright as the
    mediastinum (RSNA 00704310 is one); an inverted image fails by a wide margin (about -0.4).
    """
    loader = LoadChestXray()
    files = _chest_dicoms(realdata)
    assert len(files) >= 12
    for path in files:
        image = loader(path)[0].numpy()  # (W, H): axis 0 = column x
        width, height = image.shape
        ys = slice(int(0.3 * height), int(0.6 * height))
        centre = np.median(image[int(0.46 * width) : int(0.54 * width), ys])
        right_lung = np.median(image[int(0.2 * width) : int(0.32 * width), ys])
        left_lung = np.median(image[int(0.68 * width) : int(0.8 * width), ys])
        assert centre > (right_lung + left_lung) / 2 + 0.05, (path.name, centre, right_lung, left_lung)


def test_rsna_box_lands_on_the_same_pixels(realdata: Path) -> None:
    """An RSNA ``(x, y, width, height)`` box covers ``image[0, x:x+w, y:y+h]`` of the loaded tensor."""
    with (realdata / "rsna" / "stage_2_train_labels_subset.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["Target"] == "1"]
    assert rows
    for row in rows:
        path = realdata / "rsna" / "dicoms" / f"{row['patientId']}.dcm"
        x, y, w, h = (int(float(row[k])) for k in ("x", "y", "width", "height"))
        ds = pydicom.dcmread(path)
        display, _ = dicom_to_display(ds, ds.pixel_array)
        image = LoadChestXray()(path)
        np.testing.assert_array_equal(image[0, x : x + w, y : y + h].numpy(), display[y : y + h, x : x + w].T)


def test_png_and_jpeg_load_as_grayscale(realdata: Path, tmp_path: Path) -> None:
    png = sorted((realdata / "iu_xray" / "images").glob("*.png"))[0]
    image = LoadChestXray()(png)
    from PIL import Image

    with Image.open(png) as pil:
        gray = np.asarray(pil.convert("L"), dtype=np.float32) / 255.0
    assert tuple(image.shape) == (1, gray.shape[1], gray.shape[0])
    np.testing.assert_allclose(image[0].numpy().T, gray, atol=1e-6)

    jpeg = tmp_path / "study.jpg"
    Image.fromarray((gray * 255).astype(np.uint8)).save(jpeg, quality=95)
    loaded = LoadChestXray()(jpeg)
    assert loaded.meta["format"] == "JPEG"
    assert float((loaded[0].numpy().T - gray).__abs__().mean()) < 0.02

    sixteen = tmp_path / "sixteen.png"
    ramp = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)
    Image.fromarray(ramp).save(sixteen)
    np.testing.assert_allclose(LoadChestXray()(sixteen)[0].numpy().T, ramp / 65535.0, atol=1e-6)


# ---------------------------------------------------------------- known answers on synthetic arrays


def test_signed_pixels_and_bits_stored(dicom_writer) -> None:
    stored = np.array([[-1000, 0, 1000]], dtype=np.int16)
    image = LoadChestXray(voi="none")(dicom_writer("signed.dcm", stored, BitsStored=12, HighBit=11))
    np.testing.assert_allclose(image[0, :, 0].numpy(), [0.0, 0.5, 1.0], atol=1e-6)


def test_synthetic_box_and_spacing_layout(dicom_writer) -> None:
    stored = np.zeros((60, 80), dtype=np.uint8)
    x, y, w, h = 50, 10, 20, 15  # columns 50..69, rows 10..24
    stored[y : y + h, x : x + w] = 255
    image = LoadChestXray(voi="none")(dicom_writer("box.dcm", stored, PixelSpacing=[0.5, 0.25]))
    assert tuple(image.shape) == (1, 80, 60)
    inside = image[0, x : x + w, y : y + h]
    assert float(inside.min()) == 1.0 and float(image.sum()) == w * h
    assert image.meta["pixel_spacing"] == (0.5, 0.25) and image.meta["spacing_source"] == "PixelSpacing"
    np.testing.assert_allclose(np.diag(image.affine.numpy())[:2], [0.25, 0.5])  # (x = column, y = row) spacing
    imager = LoadChestXray()(dicom_writer("imager.dcm", stored, PixelSpacing=[0, 0], ImagerPixelSpacing=[0.2, 0.2]))
    assert imager.meta["spacing_source"] == "ImagerPixelSpacing" and imager.meta["pixel_spacing"] == (0.2, 0.2)
    none = LoadChestXray()(dicom_writer("nospacing.dcm", stored))
    assert none.meta["spacing_source"] == "none" and all(np.isnan(none.meta["pixel_spacing"]))


def test_no_preamble_is_read(dicom_writer) -> None:
    stored = np.array([[0, 128, 255]], dtype=np.uint8)
    path = dicom_writer("raw.dcm", stored, preamble=False)
    assert b"DICM" not in path.read_bytes()[:132]
    np.testing.assert_allclose(LoadChestXray(voi="none")(path)[0, :, 0].numpy(), [0.0, 128 / 255, 1.0], atol=1e-6)


def test_no_patient_identifiers_in_metadata(dicom_writer) -> None:
    phi = {
        "PatientName": "Quenby^Ludmila",
        "PatientID": "PID-8841-ZX",
        "PatientBirthDate": "19410203",
        "AccessionNumber": "ACC77123409",
        "InstitutionName": "Saint Wystan Infirmary",
        "ReferringPhysicianName": "Okonkwo^Tobiah",
    }
    image = LoadChestXray()(dicom_writer("phi.dcm", np.eye(8, dtype=np.uint8) * 200, ViewPosition="PA", **phi))
    dumped = repr(dict(image.meta)).lower()
    for value in phi.values():
        for part in value.lower().split("^"):
            assert part not in dumped
    assert image.meta["view_position"] == "PA"


# ---------------------------------------------------------------- MONAI integration


def test_reader_works_inside_monai_loadimage(realdata: Path) -> None:
    path = realdata / "other_dicom" / "CR-MONO1-10-chest.dcm"
    via_monai = LoadImage(reader=ChestXrayReader(), image_only=True, ensure_channel_first=True)(path)
    torch.testing.assert_close(via_monai.as_tensor(), LoadChestXray()(path).as_tensor())
    assert ChestXrayReader().verify_suffix(["a.dcm", "b.PNG", "c.jpeg", "noext"])
    assert not ChestXrayReader().verify_suffix("a.nii.gz")


def test_dictionary_form_and_aliases(dicom_writer) -> None:
    path = dicom_writer("d.dcm", np.full((4, 6), 7, dtype=np.uint8), WindowCenter=7, WindowWidth=3)
    out = LoadChestXrayd(keys="image")({"image": str(path), "report": "kept"})
    assert out["report"] == "kept" and tuple(out["image"].shape) == (1, 6, 4)
    assert LoadChestXrayD is LoadChestXrayd and LoadChestXrayDict is LoadChestXrayd


def test_read_chest_xray_functional_api(dicom_writer) -> None:
    result = read_chest_xray(dicom_writer("f.dcm", np.array([[0, 255]], dtype=np.uint8)), voi="none")
    assert result.pixels.shape == (1, 2) and result.meta["format"] == "DICOM"


# ---------------------------------------------------------------- bad input


def _assert_read_error(path: Path, reason: str) -> None:
    with pytest.raises(ChestXrayReadError) as info:
        LoadChestXray()(path)
    message = str(info.value)
    assert str(path) in message, message
    assert reason in message, message


def test_missing_empty_and_random_files(tmp_path: Path) -> None:
    _assert_read_error(tmp_path / "absent.dcm", "file not found")
    (tmp_path / "empty.dcm").write_bytes(b"")
    _assert_read_error(tmp_path / "empty.dcm", "empty file")
    (tmp_path / "noise.dcm").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ChestXrayReadError, match="noise.dcm"):
        LoadChestXray()(tmp_path / "noise.dcm")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    _assert_read_error(tmp_path / "broken.png", "cannot decode")


def test_truncated_file(dicom_writer) -> None:
    path = dicom_writer("whole.dcm", np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 3000])
    with pytest.raises(ChestXrayReadError, match="whole.dcm"):
        LoadChestXray()(path)


def test_absurd_size_header(dicom_writer) -> None:
    _assert_read_error(
        dicom_writer("huge.dcm", np.zeros((8, 8), dtype=np.uint8), Rows=60000, Columns=60000), "implausible"
    )
    _assert_read_error(dicom_writer("big.dcm", np.zeros((8, 8), dtype=np.uint8), Rows=4000, Columns=4000), "truncated")


def test_no_pixel_data(tmp_path: Path) -> None:
    ds = Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.BasicTextSRStorage
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["sr"])
    ds.SOPClassUID = pydicom.uid.BasicTextSRStorage
    ds.Modality = "SR"
    path = tmp_path / "report.dcm"
    ds.save_as(path, enforce_file_format=True)
    _assert_read_error(path, "no pixel data (SOP Class: Basic Text SR Storage)")


def test_rgb_and_multiframe(dicom_writer) -> None:
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    _assert_read_error(
        dicom_writer(
            "rgb.dcm", rgb, Rows=4, Columns=4, SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0
        ),
        "colour DICOM (RGB, 3 samples per pixel)",
    )
    frames = np.zeros((3, 4, 4), dtype=np.uint8)
    _assert_read_error(
        dicom_writer("multi.dcm", frames, Rows=4, Columns=4, NumberOfFrames=3), "multi-frame DICOM (3 frames)"
    )


def test_syntax_without_decoder(realdata: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(realdata / "other_dicom" / "CR-ModalitySequenceLUT.dcm")
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2: pydicom has no decoder at all
    mpeg = tmp_path / "mpeg.dcm"
    ds.save_as(mpeg)
    _assert_read_error(mpeg, "no decoder exists for transfer syntax MPEG2")

    decoder = get_decoder(JPEGLosslessSV1)  # needs pylibjpeg-libjpeg (or gdcm, not installed)
    decoder.remove_plugin("pylibjpeg")
    try:
        _assert_read_error(realdata / "other_dicom" / "CR-ModalitySequenceLUT.dcm", "no decoder available")
    finally:
        decoder.add_plugin("pylibjpeg", ("pydicom.pixels.decoders.pylibjpeg", "_decode_frame"))
    assert decoder.is_available


def test_errors_pickle_for_dataloader_workers(tmp_path: Path) -> None:
    import pickle

    error = ChestXrayReadError(tmp_path / "x.dcm", "empty file")
    clone = pickle.loads(pickle.dumps(error))
    assert str(clone) == str(error) and clone.reason == "empty file"
    assert os.fspath(tmp_path / "x.dcm") in str(clone)
