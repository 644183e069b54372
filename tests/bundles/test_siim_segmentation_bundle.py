"""The SIIM pneumothorax segmentation bundle end to end on the tiny demo, and its deployment contract.

One tiny training run (a tiny exported "pretrained" encoder, 2 epochs) is shared by the tests of the module:
outputs, evaluation, the inference interface (masks at the original size, named after the inputs), the
geometry of the written masks (an oracle network on a synthetic non-square case), ``ckpt_export`` /
``verify_net_in_out`` / ``verify_metadata``, TorchScript equality, and the real SIIM DICOMs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from bundle_helpers import (
    REPO_ROOT,
    SEGMENTATION_NETWORK,
    VISIBLE_MASKS,
    as_cli,
    assert_console_holds_no_planted_phi,
    assert_inference_preprocesses_as_evaluation,
    assert_metadata_verifies,
    assert_net_in_out_verifies,
    assert_no_planted_phi,
    assert_quiet_console,
    assert_short_console,
    bundle_command,
    deploy_inputs,
    export_torchscript,
    read_config,
    run_cli,
    run_deploy_app,
    run_torchrun_two_processes,
    train_tiny_segmentation_bundle,
)
from monai.bundle import ConfigParser
from monai.bundle import run as bundle_run
from PIL import Image
from scipy import ndimage
from tracking import assert_mlflow_tracking

BUNDLE = REPO_ROOT / "bundles" / "siim_pneumothorax_segmentation"
CONFIGS = BUNDLE / "configs"
README_COMMAND = bundle_command("siim_pneumothorax_segmentation", "train.json")
INFERENCE_COMMAND = bundle_command("siim_pneumothorax_segmentation", "inference.json")

NETWORK_OVERRIDES = SEGMENTATION_NETWORK

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The README's training command from the repository root (tiny overrides) into a copy of the bundle."""
    return train_tiny_segmentation_bundle(tiny_demo, tmp_path_factory.mktemp("siim_seg"))


@pytest.fixture(scope="module")
def exported(trained: dict[str, Any]) -> Path:
    """``ckpt_export`` exactly as the docs give it, run in the bundle folder."""
    return export_torchscript(trained["bundle_root"], NETWORK_OVERRIDES)


def test_training_outputs(trained: dict[str, Any], tiny_demo: Path) -> None:
    assert_quiet_console(trained["console"], trained["overrides"], terms=("train_loss",))
    bundle_root = trained["bundle_root"]
    state = torch.load(bundle_root / "models" / "model.pt", weights_only=True)
    pretrained = torch.load(trained["encoder"], weights_only=True)
    for key, value in pretrained.items():  # frozen encoder (MGCA protocol): the pretrained weights, unchanged
        assert torch.equal(state[key], value), key
    report = json.loads((bundle_root / "eval" / "metrics.json").read_text())
    test_items = json.loads((tiny_demo / "datalist_segmentation.json").read_text())["test"]
    assert report["n"] == len(test_items) < 10
    for key in ("mean_dice", "mean_iou"):
        assert 0.0 <= report[key] <= 1.0
    assert report["engine_metrics"]["mean_dice"] == pytest.approx(report["mean_dice"], abs=1e-5)
    assert report["engine_metrics"]["mean_iou"] == pytest.approx(report["mean_iou"], abs=1e-5)
    assert report["freeze_encoder"] is True and report["label_fraction"] == 100
    assert report["encoder"]["sha256"] == json.loads(trained["encoder"].with_suffix(".json").read_text())["sha256"]
    assert report["overlays"] and all(
        (bundle_root / "eval" / name).read_bytes()[:4] == b"\x89PNG" for name in report["overlays"]
    )
    assert list((bundle_root / "logs").glob("events.*"))
    assert "val_mean_dice" in trained["console"] and "test split" in trained["console"]
    assert "corrupt cache" not in trained["console"].lower()  # the cached items load with weights_only=True


def test_tracking_mlflow_receives_the_loss_and_the_final_metrics(trained: dict[str, Any], tmp_path: Path) -> None:
    """MONAI's own ``--tracking mlflow`` as it is: the loss per iteration and the epoch mean of every loss term, the
    validation metric of every epoch, and the test metrics equal to ``eval/metrics.json``."""
    overrides = {**trained["overrides"], "bundle_root": str(tmp_path), "epochs": 2}
    test = {"mean_dice": ("mean_dice",), "mean_iou": ("mean_iou",)}
    assert_mlflow_tracking(README_COMMAND, overrides, {"train_loss"}, {"val_mean_dice"}, test)


def test_outputs_and_console_hold_no_planted_phi(trained: dict[str, Any], tiny_demo: Path) -> None:
    assert assert_no_planted_phi(trained["bundle_root"], trained["console"], tiny_demo) >= 4


def test_evaluate_config_reproduces_the_test_metrics(trained: dict[str, Any]) -> None:
    bundle_root = trained["bundle_root"]
    expected = json.loads((bundle_root / "eval" / "metrics.json").read_text())
    overrides = {**trained["overrides"], "pretrained_encoder": str(bundle_root / "no_such_encoder.pt")}
    bundle_run(config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")], **overrides)
    actual = json.loads((bundle_root / "eval" / "metrics.json").read_text())
    for key in ("mean_dice", "mean_iou", "n", "positives"):
        assert actual[key] == pytest.approx(expected[key]), key


def test_inference_interface_on_demo_images(trained: dict[str, Any], tiny_demo: Path, tmp_path: Path) -> None:
    images = tmp_path / "in"
    images.mkdir()
    for item in json.loads((tiny_demo / "datalist_segmentation.json").read_text())["test"][:3]:
        shutil.copy(tiny_demo / item["image"], images / Path(item["image"]).name)
    out = tmp_path / "out"
    args = {
        "bundle_root": str(trained["bundle_root"]),
        "dataset_dir": str(images),
        "output_dir": str(out),
        **NETWORK_OVERRIDES,
    }
    result = run_cli(INFERENCE_COMMAND + as_cli(args))
    assert result.returncode == 0, result.stderr[-3000:]
    assert_short_console(result)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{p.stem}.png" for p in images.iterdir())
    for path in images.iterdir():
        ds = pydicom.dcmread(path)
        mask = np.asarray(Image.open(out / f"{path.stem}.png"))
        assert mask.shape == (ds.Rows, ds.Columns) and set(np.unique(mask)) <= {0, 1}


def test_inference_keeps_subfolders_and_records_a_bad_file(
    trained: dict[str, Any], tiny_demo: Path, tmp_path: Path
) -> None:
    """An extensionless DICOM in study/series folders, a DICOM and a PNG sharing a stem and a broken PNG: the masks
    mirror the subfolders, no name collides, the bad file is listed in errors.json and the run exits with 1."""
    test_items = json.loads((tiny_demo / "datalist_segmentation.json").read_text())["test"][:2]
    export = tmp_path / "in"
    (export / "STUDY1" / "SERIES1").mkdir(parents=True)
    shutil.copy(tiny_demo / test_items[0]["image"], export / "STUDY1" / "SERIES1" / "IM0001")
    shutil.copy(tiny_demo / test_items[1]["image"], export / "pair.dcm")
    Image.fromarray(np.full((40, 30), 128, dtype=np.uint8)).save(export / "pair.png")
    (export / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    args = {"bundle_root": str(trained["bundle_root"]), "dataset_dir": str(export), "output_dir": str(out)}
    result = run_cli(INFERENCE_COMMAND + as_cli({**args, **NETWORK_OVERRIDES}))
    assert result.returncode == 1 and "finished for 3 inputs; 1 could not be read" in result.stderr, result.stderr[
        -3000:
    ]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["STUDY1/SERIES1/IM0001.png", "errors.json", "pair.dcm.png", "pair.png.png"]
    assert [e["file"] for e in json.loads((out / "errors.json").read_text())] == ["broken.png"]
    ds = pydicom.dcmread(export / "STUDY1" / "SERIES1" / "IM0001")
    assert np.asarray(Image.open(out / "STUDY1" / "SERIES1" / "IM0001.png")).shape == (ds.Rows, ds.Columns)
    assert np.asarray(Image.open(out / "pair.png.png")).shape == (40, 30)


class _BrightRegion(torch.nn.Module):
    """An oracle 'network': probability ~1 where the normalised image is bright, ~0 elsewhere."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(8.0 * image)


@pytest.mark.parametrize("output_ext", [".png", ".nii.gz"])
def test_written_mask_lies_on_the_ground_truth_at_the_original_size(tmp_path: Path, output_ext: str) -> None:
    """A non-square synthetic image (so that resize, pad, crop and their inversion all matter) whose bright
    rectangle is the ground truth: the mask written by inference.json covers the same pixels."""
    rows, cols = 120, 200
    truth = np.zeros((rows, cols), dtype=bool)
    truth[30:71, 60:141] = True
    pixels = np.where(truth, 255, 0).astype(np.uint8)
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(pixels).save(images / "case_01.png")
    out = tmp_path / "out"
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser.update(
        {
            "bundle_root": str(tmp_path),
            "dataset_dir": str(images),
            "output_dir": str(out),
            "output_ext": output_ext,
            "device": "$torch.device('cpu')",
            "network_def": _BrightRegion(),
            "handlers": [],
        }
    )
    parser.get_parsed_content("evaluator").run()
    written = out / f"case_01{output_ext}"
    assert [p.name for p in out.iterdir()] == [written.name]
    if output_ext == ".png":
        mask = np.asarray(Image.open(written)) > 0
    else:
        mask = np.asarray(nib.load(str(written)).dataobj).squeeze().T > 0  # NIfTI holds MONAI's (W, H)
    assert mask.shape == (rows, cols)
    assert not (mask & ~ndimage.binary_dilation(truth, iterations=2)).any()  # nothing off the ground truth
    assert (truth & ~ndimage.binary_dilation(mask, iterations=2)).sum() == 0  # nothing of it missed
    assert (mask & truth).sum() / (mask | truth).sum() > 0.9


def test_torchscript_export_equals_eager(trained: dict[str, Any], exported: Path) -> None:
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser.update({"bundle_root": str(trained["bundle_root"]), "device": "$torch.device('cpu')", **NETWORK_OVERRIDES})
    eager = parser.get_parsed_content("network_def")
    eager.load_state_dict(torch.load(trained["bundle_root"] / "models" / "model.pt", weights_only=True))
    eager.eval()
    scripted = torch.jit.load(str(exported)).eval()
    image = torch.randn(2, 1, 128, 128)
    with torch.no_grad():
        expected, actual = eager(image), scripted(image)
    assert expected.shape == (2, 1, 128, 128)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_monai_deploy_app_writes_the_bundle_masks_as_dicom_seg(
    trained: dict[str, Any], tiny_demo: Path, tmp_path: Path
) -> None:
    """python -m sista_monai.deploy segmentation on model.ts alone (MONAI Deploy App SDK) writes, for every
    instance, a DICOM SEG referencing it whose frame equals the bundle's own inference.json mask pixel for pixel
    in the source image's orientation (rows x columns, not transposed); every photometric variant of the demo and
    the real SIIM DICOMs."""
    pytest.importorskip("monai.deploy.operators", reason="the [deploy] extra (monai-deploy-app-sdk) is not installed")
    images = tmp_path / "in"
    files = deploy_inputs(images, tiny_demo, ["siim/dicoms/*.dcm"])
    own, app = tmp_path / "own", tmp_path / "app"
    args = {"bundle_root": str(trained["bundle_root"]), "dataset_dir": str(images), "output_dir": str(own)}
    masks = VISIBLE_MASKS
    result = run_cli(INFERENCE_COMMAND + as_cli({**args, **NETWORK_OVERRIDES, **masks}))
    assert result.returncode == 0, result.stderr[-3000:]
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    assert parser["mask_threshold"] == 0.5 and parser["min_mask_pixels"] == 150
    shutil.copytree(trained["bundle_root"], tmp_path / "bundle", ignore=shutil.ignore_patterns("logs", "eval"))
    config = json.loads((CONFIGS / "inference.json").read_text())
    (tmp_path / "bundle" / "configs" / "inference.json").write_text(json.dumps({**config, **masks}))
    deployed = run_deploy_app("segmentation", images, app, export_torchscript(tmp_path / "bundle", NETWORK_OVERRIDES))
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    assert f"{len(files)} DICOM image instance(s) processed" in deployed.stderr
    assert_console_holds_no_planted_phi(deployed.stdout + deployed.stderr, tiny_demo)
    foreground = 0
    for path in files:
        name = path.relative_to(images).with_suffix("").as_posix()
        expected = np.asarray(Image.open(own / f"{name}.png")) > 0
        seg = pydicom.dcmread(app / f"{name}_seg.dcm")
        source = pydicom.dcmread(path, stop_before_pixels=True)
        assert seg.Modality == "SEG" and seg.SegmentSequence[0].SegmentLabel == "pneumothorax"
        referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
        assert referenced == source.SOPInstanceUID
        frame = seg.pixel_array.reshape(source.Rows, source.Columns) > 0
        assert expected.shape == (source.Rows, source.Columns)
        np.testing.assert_array_equal(frame, expected, err_msg=name)
        foreground += int(expected.sum() > 0 and not expected.all() and not np.array_equal(expected, expected.T))
    assert foreground >= 3  # masks whose transpose differs: the comparison can see a transposition


def test_verify_net_in_out_and_metadata(trained: dict[str, Any]) -> None:
    assert_net_in_out_verifies(trained["bundle_root"], NETWORK_OVERRIDES)
    assert_metadata_verifies(CONFIGS / "metadata.json")


@pytest.mark.realdata
def test_real_siim_dicoms_give_masks_of_the_original_size(
    trained: dict[str, Any], realdata: Path, tmp_path: Path
) -> None:
    dicoms = realdata / "siim" / "dicoms"
    out = tmp_path / "out"
    args = {
        "bundle_root": str(trained["bundle_root"]),
        "dataset_dir": str(dicoms),
        "output_dir": str(out),
        **NETWORK_OVERRIDES,
    }
    result = run_cli(INFERENCE_COMMAND + as_cli(args))
    assert result.returncode == 0, result.stderr[-3000:]
    files = sorted(p for p in dicoms.iterdir() if p.suffix.lower() in (".dcm", ".dicom", ".dic"))
    assert len(files) == 4 and sorted(p.name for p in out.iterdir()) == sorted(f"{p.stem}.png" for p in files)
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        mask = np.asarray(Image.open(out / f"{path.stem}.png"))
        assert mask.shape == (ds.Rows, ds.Columns) and mask.dtype == np.uint8


def test_torchrun_two_processes_on_cpu(trained: dict[str, Any], tiny_demo: Path, tmp_path: Path) -> None:
    run_torchrun_two_processes(
        "siim_pneumothorax_segmentation", {**trained["overrides"], "epochs": 1, "batch_size": 4}, 29542, tmp_path
    )
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["n"] == len(json.loads((tiny_demo / "datalist_segmentation.json").read_text())["test"])  # both ranks


def test_configs_agree_with_each_other_and_with_the_pretraining_defaults(tiny_demo: Path) -> None:
    train, inference = read_config(BUNDLE.name, "train.json"), read_config(BUNDLE.name, "inference.json")
    pretrain = json.loads((REPO_ROOT / "bundles" / "pretrain" / "configs" / "train.json").read_text())
    for key in ("image_encoder", "resize_size", "image_size", "intensity_mean", "intensity_std"):
        assert train[key] == inference[key] == pretrain[key], key
    for key in ("feature_size", "norm_name", "mask_threshold", "min_mask_pixels"):
        assert train[key] == inference[key], key
    assert train["pretrained_encoder"] == "bundles/pretrain/models/image_encoder.pt"
    assert train["loss"]["_target_"] == "DiceFocalLoss" and train["freeze_encoder"] is True
    item = json.loads((tiny_demo / "datalist_segmentation.json").read_text())["test"][0]
    pair = {"image": str(tiny_demo / item["image"]), "label": str(tiny_demo / item["mask"])}
    assert_inference_preprocesses_as_evaluation(CONFIGS, pair)
    meta = read_config(BUNDLE.name, "metadata.json")["network_data_format"]
    assert (
        meta["inputs"]["image"]["spatial_shape"]
        == meta["outputs"]["pred"]["spatial_shape"]
        == [train["image_size"]] * 2
    )
    assert meta["outputs"]["pred"]["format"] == "segmentation"
    # generic bundle clients (MONAI Label) read the label values from channel_def and the mask from the last step
    assert meta["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "pneumothorax"}
    last = inference["postprocessing"]["transforms"][-2:]
    assert [t["_target_"] for t in last] == ["SqueezeDimd", "CastToTyped"] and last[1]["dtype"] == "$numpy.uint8"
