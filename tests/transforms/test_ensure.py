"""MONAI Deploy's (W, H, 1) array → the same image the loader gives; the inference folder and JSON writer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImaged

from sista_monai.data.tasks import inference_datalist
from sista_monai.handlers import ClassificationJSONWriter
from sista_monai.transforms import ChestXrayReader, EnsureChestXray, EnsureChestXrayd, LoadChestXray, LoadChestXrayd


def _deploy_array(path: Path, **meta: object) -> MetaTensor:
    """What DICOMSeriesToVolumeOperator + the bundle operator hand a bundle: modality-LUT values, (W, H, 1)."""
    ds = pydicom.dcmread(path)
    values = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1.0)) + float(
        ds.get("RescaleIntercept", 0.0)
    )
    return MetaTensor(
        torch.from_numpy(np.ascontiguousarray(values.T[..., None])), meta={"original_channel_dim": "no_channel", **meta}
    )


@pytest.fixture
def ramp() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (np.add.outer(np.arange(40), np.arange(30)) * 50 + rng.integers(0, 40, (40, 30))).astype(np.uint16)


def test_loaded_images_pass_through_unchanged(dicom_writer: Callable[..., Path], ramp: np.ndarray) -> None:
    loaded = LoadChestXray()(dicom_writer("a.dcm", ramp))
    assert EnsureChestXray()(loaded) is loaded


def test_array_without_window_matches_the_loaders_percentile_window(
    dicom_writer: Callable[..., Path], ramp: np.ndarray
) -> None:
    path = dicom_writer("a.dcm", ramp)
    loaded = LoadChestXray()(path)
    converted = EnsureChestXray()(_deploy_array(path))
    assert loaded.meta["voi_source"] == converted.meta["voi_source"] == "percentile"
    assert converted.shape == loaded.shape == (1, 30, 40)
    assert torch.equal(converted.as_tensor(), loaded.as_tensor())


def test_array_with_window_and_polarity_metadata_matches_the_loader(
    dicom_writer: Callable[..., Path], ramp: np.ndarray
) -> None:
    path = dicom_writer(
        "b.dcm",
        ramp,
        PhotometricInterpretation="MONOCHROME1",
        WindowCenter=1500,
        WindowWidth=2000,
        RescaleSlope=2,
        RescaleIntercept=-100,
    )
    loaded = LoadChestXray()(path)
    converted = EnsureChestXray()(
        _deploy_array(path, PhotometricInterpretation="MONOCHROME1", WindowCenter=1500, WindowWidth=2000)
    )
    assert converted.meta["voi_source"] == "window"
    assert torch.allclose(converted.as_tensor(), loaded.as_tensor(), atol=1e-6)
    by_arguments = EnsureChestXray(photometric_interpretation="MONOCHROME1", window_center=1500, window_width=2000)(
        _deploy_array(path)
    )
    assert torch.allclose(by_arguments.as_tensor(), loaded.as_tensor(), atol=1e-6)


@pytest.mark.parametrize("layout", ["wh", "1wh", "numpy"])
def test_other_single_frame_layouts(dicom_writer: Callable[..., Path], ramp: np.ndarray, layout: str) -> None:
    path = dicom_writer("c.dcm", ramp)
    values = ramp.T.astype(np.float32)
    given = {"wh": torch.from_numpy(values), "1wh": torch.from_numpy(values)[None], "numpy": values[..., None]}[layout]
    assert torch.equal(EnsureChestXray()(given).as_tensor(), LoadChestXray()(path).as_tensor())


def test_multichannel_arrays_are_refused() -> None:
    with pytest.raises(ValueError, match=r"single-frame grey-scale radiograph .* got shape \(30, 40, 3\)"):
        EnsureChestXray()(np.zeros((30, 40, 3), dtype=np.float32))


def test_dictionary_form_and_monai_loadimaged_with_the_chest_reader(
    dicom_writer: Callable[..., Path], ramp: np.ndarray
) -> None:
    """inference.json loads with MONAI's LoadImaged (which MONAI Deploy removes by name) and the chest reader."""
    path = dicom_writer("d.dcm", ramp, WindowCenter=1000, WindowWidth=1500)
    by_monai = LoadImaged("image", reader=ChestXrayReader(), image_only=True, ensure_channel_first=True)(
        {"image": str(path)}
    )
    by_project = LoadChestXrayd("image")({"image": str(path)})
    assert torch.equal(by_monai["image"].as_tensor(), by_project["image"].as_tensor())
    assert by_monai["image"].meta["voi_source"] == "window"
    assert EnsureChestXrayd("image")(by_monai)["image"] is by_monai["image"]


@pytest.mark.realdata
def test_real_rsna_arrays_match_the_loader(realdata: Path) -> None:
    files = sorted((realdata / "rsna" / "dicoms").glob("*.dcm"))
    assert len(files) == 6
    for path in files:
        loaded = LoadChestXray()(path)
        converted = EnsureChestXray()(_deploy_array(path))
        assert torch.equal(converted.as_tensor(), loaded.as_tensor()), path.name


def test_inference_datalist(tmp_path: Path) -> None:
    for name in ("b.dcm", "a.PNG", "c.jpeg", "notes.txt", "d.dicom"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    assert [Path(i["image"]).name for i in inference_datalist(tmp_path)] == ["a.PNG", "b.dcm", "c.jpeg", "d.dicom"]
    with pytest.raises(ValueError, match="holds no DICOM"):
        inference_datalist(tmp_path / "sub")
    with pytest.raises(FileNotFoundError):
        inference_datalist(tmp_path / "absent")


def test_json_writer_names_the_file_after_the_input(tmp_path: Path) -> None:
    writer = ClassificationJSONWriter(
        tmp_path / "out", threshold=0.4, class_names={"0": "no opacity", "1": "Lung Opacity"}
    )
    path = writer.write(torch.tensor([0.42]), "/data/in/study-7.dcm")
    assert path == tmp_path / "out" / "study-7.json"
    record = json.loads(path.read_text())
    assert record == {
        "image": "study-7.dcm",
        "probability": pytest.approx(0.42),
        "prediction": 1,
        "threshold": 0.4,
        "label": "Lung Opacity",
    }
