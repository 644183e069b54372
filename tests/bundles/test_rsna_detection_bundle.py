"""The RSNA pneumonia detection bundle end to end: the README commands with tiny overrides, evaluate.json,
the inference interface (one JSON per image, boxes in the input file's pixels, checked against the network's
own boxes mapped by hand), ``ckpt_export`` / TorchScript equality, ``verify_metadata``, the real RSNA DICOMs,
two-process ``torchrun`` on CPU and planted PHI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import torch
from bundle_helpers import (
    REPO_ROOT,
    as_cli,
    assert_console_holds_no_planted_phi,
    assert_inference_preprocesses_as_evaluation,
    assert_metadata_verifies,
    assert_no_planted_phi,
    assert_quiet_console,
    assert_short_console,
    assert_sr_references,
    bundle_command,
    deploy_inputs,
    export_torchscript,
    read_config,
    run_cli,
    run_deploy_app,
    run_torchrun_two_processes,
    train_downstream_bundle,
)
from monai.bundle import ConfigParser
from monai.bundle import run as bundle_run
from tiny_models import TINY_ENCODER
from tracking import assert_mlflow_tracking

BUNDLE = REPO_ROOT / "bundles" / "rsna_pneumonia_detection"
CONFIGS = BUNDLE / "configs"
README_COMMAND = bundle_command("rsna_pneumonia_detection", "train.json")
INFERENCE_COMMAND = bundle_command("rsna_pneumonia_detection", "inference.json")

NETWORK_OVERRIDES = {**{f"image_encoder#{key}": value for key, value in TINY_ENCODER.items()}, "fpn_channels": 16}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The README's training command from the repository root (tiny overrides) into a copy of the bundle."""
    overrides = {"min_iterations_per_epoch": 3, **NETWORK_OVERRIDES}
    return train_downstream_bundle(BUNDLE.name, tiny_demo, tmp_path_factory.mktemp("rsna_det"), TINY_ENCODER, overrides)


def _network(bundle_root: Path) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser.update({"bundle_root": str(bundle_root), "device": "$torch.device('cpu')", **NETWORK_OVERRIDES})
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle_root / "models" / "model.pt", weights_only=True))
    return network.eval()


def test_training_outputs(trained: dict[str, Any], tiny_demo: Path) -> None:
    assert_quiet_console(
        trained["console"], trained["overrides"], terms=("loss", "loss_classification", "loss_box_regression")
    )
    bundle_root = trained["bundle_root"]
    state = torch.load(bundle_root / "models" / "model.pt", weights_only=True)
    pretrained = torch.load(trained["encoder"], weights_only=True)
    for key, value in pretrained.items():  # frozen encoder (MGCA protocol): the pretrained weights, unchanged
        assert torch.equal(state[f"feature_extractor.{key}"], value), key
    report = json.loads((bundle_root / "eval" / "metrics.json").read_text())
    test_items = json.loads((tiny_demo / "datalist_detection.json").read_text())["test"]
    assert report["images"] == len(test_items) < 10
    assert report["gt_boxes"] == sum(len(item["boxes"]) for item in test_items) > 0
    assert 0.0 <= report["map"] <= 1.0 and 0.0 <= report["map50"] <= 1.0
    assert report["metrics"] == {"map": report["map"], "map50": report["map50"]}
    assert report["engine_metrics"]["map"] == pytest.approx(report["map"], abs=1e-9)
    assert report["engine_metrics"]["map50"] == pytest.approx(report["map50"], abs=1e-9)
    assert report["iou_thresholds"] == pytest.approx([0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75])
    assert report["freeze_encoder"] is True and report["label_fraction"] == 100
    assert report["encoder"]["sha256"] == json.loads(trained["encoder"].with_suffix(".json").read_text())["sha256"]
    assert report["overlays"] and all(
        (bundle_root / "eval" / name).read_bytes()[:4] == b"\x89PNG" for name in report["overlays"]
    )
    events = list((bundle_root / "logs").glob("events.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = set()
    for path in events:
        accumulator = EventAccumulator(str(path))
        accumulator.Reload()
        scalars |= set(accumulator.Tags()["scalars"])
    assert {"loss", "loss_classification", "loss_box_regression"} <= scalars, scalars  # the training loss terms
    assert "val_map" in trained["console"] and "test split" in trained["console"]
    assert "corrupt cache" not in trained["console"].lower()  # the cached items load with weights_only=True


def test_tracking_mlflow_receives_the_loss_and_the_final_metrics(trained: dict[str, Any], tmp_path: Path) -> None:
    """MONAI's own ``--tracking mlflow`` as it is: the loss per iteration and the epoch mean of every loss term, the
    validation metric of every epoch, and the test metrics equal to ``eval/metrics.json``."""
    overrides = {**trained["overrides"], "bundle_root": str(tmp_path), "epochs": 2}
    terms = {"loss", "loss_classification", "loss_box_regression"}
    assert_mlflow_tracking(README_COMMAND, overrides, terms, {"val_map"}, {"map": ("map",), "map50": ("map50",)})


def test_outputs_and_console_hold_no_planted_phi(trained: dict[str, Any], tiny_demo: Path) -> None:
    assert assert_no_planted_phi(trained["bundle_root"], trained["console"], tiny_demo) >= 4


def test_evaluate_config_reproduces_the_test_metrics(trained: dict[str, Any]) -> None:
    bundle_root = trained["bundle_root"]
    expected = json.loads((bundle_root / "eval" / "metrics.json").read_text())
    overrides = {**trained["overrides"], "pretrained_encoder": str(bundle_root / "no_such_encoder.pt")}
    bundle_run(config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")], **overrides)
    actual = json.loads((bundle_root / "eval" / "metrics.json").read_text())
    for key in ("map", "map50", "images", "gt_boxes", "pred_boxes"):
        assert actual[key] == pytest.approx(expected[key]), key


def _inference(bundle_root: Path, images: Path, out: Path, check: bool = True, **extra: Any) -> Any:
    args = {
        "bundle_root": str(bundle_root),
        "dataset_dir": str(images),
        "output_dir": str(out),
        **NETWORK_OVERRIDES,
        **extra,
    }
    result = run_cli(INFERENCE_COMMAND + as_cli(args))
    assert not check or result.returncode == 0, result.stderr[-3000:]
    if check:
        assert_short_console(result)
    return result


def _expected_boxes(bundle_root: Path, path: Path, score_threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The detector's boxes on the preprocessed image, mapped to the file's pixels by hand (square images)."""
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser.update(
        {
            "bundle_root": str(bundle_root),
            "device": "$torch.device('cpu')",
            "score_threshold": score_threshold,
            **NETWORK_OVERRIDES,
        }
    )
    network = parser.get_parsed_content("network")
    network.load_state_dict(torch.load(bundle_root / "models" / "model.pt", weights_only=True))
    detector = parser.get_parsed_content("detector")
    image = parser.get_parsed_content("preprocessing")({"image": str(path)})["image"]
    detector.eval()
    with torch.no_grad():
        found = detector(image.as_tensor()[None])[0]
    size = int(image.meta["spatial_shape"][0])
    resize, crop = parser["resize_size"], parser["image_size"]
    offset = (resize - crop) // 2
    return (found["box"] + offset) * (size / resize), found["label_scores"]


def test_inference_interface_on_demo_images(trained: dict[str, Any], tiny_demo: Path, tmp_path: Path) -> None:
    images = tmp_path / "in"
    images.mkdir()
    for item in json.loads((tiny_demo / "datalist_detection.json").read_text())["test"][:3]:
        shutil.copy(tiny_demo / item["image"], images / Path(item["image"]).name)
    out = tmp_path / "out"
    _inference(trained["bundle_root"], images, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{p.stem}.json" for p in images.iterdir())
    for path in images.iterdir():
        record = json.loads((out / f"{path.stem}.json").read_text())
        assert record["image"] == path.name and record["box_mode"] == "xyxy"
        assert len(record["boxes"]) == len(record["scores"]) == len(record["labels"]) == len(record["boxes_xywh"])
        assert record["scores"] == sorted(record["scores"], reverse=True)
        boxes, scores = _expected_boxes(trained["bundle_root"], path, 0.02)
        order = torch.argsort(scores, descending=True)
        expected = boxes[order].clamp(0, record["width"])
        assert torch.allclose(torch.tensor(record["boxes"]).reshape(-1, 4), expected, atol=0.02)


def test_inference_keeps_subfolders_and_records_a_bad_file(
    trained: dict[str, Any], tiny_demo: Path, tmp_path: Path
) -> None:
    """An extensionless DICOM in a series folder and a broken PNG: the good one gets its boxes under the mirrored
    path, the bad one a line in errors.json, and the run exits with 1."""
    item = json.loads((tiny_demo / "datalist_detection.json").read_text())["test"][0]
    export = tmp_path / "in"
    (export / "SERIES1").mkdir(parents=True)
    shutil.copy(tiny_demo / item["image"], export / "SERIES1" / "IM0001")
    (export / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    result = _inference(trained["bundle_root"], export, out, check=False)
    assert result.returncode == 1 and "finished for 1 inputs; 1 could not be read" in result.stderr, result.stderr[
        -3000:
    ]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json")) == ["SERIES1/IM0001.json", "errors.json"]
    record = json.loads((out / "SERIES1" / "IM0001.json").read_text())
    assert record["image"] == "IM0001" and len(record["boxes"]) == len(record["scores"])


@pytest.fixture(scope="module")
def exported(trained: dict[str, Any]) -> Path:
    """``ckpt_export`` exactly as the docs give it, run in the bundle folder."""
    return export_torchscript(trained["bundle_root"], NETWORK_OVERRIDES)


def test_torchscript_export_equals_eager(trained: dict[str, Any], exported: Path) -> None:
    eager = _network(trained["bundle_root"])
    scripted = torch.jit.load(str(exported)).eval()
    image = torch.randn(2, 1, 128, 128)
    with torch.no_grad():
        expected, actual = eager(image), scripted(image)
    assert len(expected) == len(actual) == 6  # classification then box regression maps of 3 levels
    assert [tuple(t.shape) for t in expected[:3]] == [(2, 3, 16, 16), (2, 3, 8, 8), (2, 3, 4, 4)]
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=1e-5)


def test_monai_deploy_app_equals_the_bundle_inference(
    trained: dict[str, Any], exported: Path, tiny_demo: Path, tmp_path: Path
) -> None:
    """python -m sista_monai.deploy detection on model.ts alone (MONAI Deploy App SDK: the bundle's DetectorInferer
    runs the detector around the TorchScript head maps) gives, for every instance, the boxes (to 1 px), scores and
    labels the bundle's inference.json gives the same file, and an SR that references the instance; every
    photometric variant of the demo and the real RSNA DICOMs."""
    pytest.importorskip("monai.deploy.operators", reason="the [deploy] extra (monai-deploy-app-sdk) is not installed")
    images = tmp_path / "in"
    files = deploy_inputs(images, tiny_demo, ["rsna/dicoms/*.dcm", "other_dicom/RG1_J2KI.dcm"])
    own, app = tmp_path / "own", tmp_path / "app"
    result = _inference(trained["bundle_root"], images, own)
    deployed = run_deploy_app("detection", images, app, exported)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    assert f"{len(files)} DICOM image instance(s) processed" in deployed.stderr
    assert_console_holds_no_planted_phi(deployed.stdout + deployed.stderr, tiny_demo)
    found = 0
    for path in files:
        name = path.relative_to(images).with_suffix("").as_posix()
        expected = json.loads((own / f"{name}.json").read_text())
        actual = json.loads((app / f"{name}.json").read_text())
        assert (actual["width"], actual["height"]) == (expected["width"], expected["height"])
        assert actual["labels"] == expected["labels"] and len(actual["boxes"]) == len(expected["boxes"]), name
        if expected["boxes"]:
            np.testing.assert_allclose(actual["boxes"], expected["boxes"], rtol=0, atol=1.0, err_msg=name)
            np.testing.assert_allclose(actual["scores"], expected["scores"], rtol=0, atol=1e-4, err_msg=name)
        found += len(expected["boxes"])
        assert_sr_references(app / f"{name}_sr.dcm", path, "AI result")
    assert found > 0 and result is not None


def test_metadata_verifies() -> None:
    assert_metadata_verifies(CONFIGS / "metadata.json")


@pytest.mark.realdata
def test_real_rsna_dicoms_give_boxes_in_original_pixels(
    trained: dict[str, Any], realdata: Path, tmp_path: Path
) -> None:
    dicoms = realdata / "rsna" / "dicoms"
    out = tmp_path / "out"
    _inference(trained["bundle_root"], dicoms, out)
    files = sorted(p for p in dicoms.iterdir() if p.suffix.lower() in (".dcm", ".dicom", ".dic"))
    assert len(files) == 6 and sorted(p.name for p in out.iterdir()) == sorted(f"{p.stem}.json" for p in files)
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        record = json.loads((out / f"{path.stem}.json").read_text())
        assert (record["width"], record["height"]) == (ds.Columns, ds.Rows) == (1024, 1024)
        boxes = torch.tensor(record["boxes"]).reshape(-1, 4)
        assert len(boxes) > 0  # score threshold 0.02: an untrained-ish detector still proposes boxes
        assert bool(((boxes >= 0) & (boxes <= 1024)).all()) and bool((boxes[:, 2:] > boxes[:, :2]).all())
        expected, scores = _expected_boxes(trained["bundle_root"], path, 0.02)
        expected = expected[torch.argsort(scores, descending=True)].clamp(0, 1024)
        assert torch.allclose(boxes, expected, atol=0.05)  # 1024-pixel coordinates, not the network's 128


def test_torchrun_two_processes_on_cpu(trained: dict[str, Any], tiny_demo: Path, tmp_path: Path) -> None:
    run_torchrun_two_processes(
        "rsna_pneumonia_detection", {**trained["overrides"], "epochs": 1, "batch_size": 4}, 29543, tmp_path
    )
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["images"] == len(
        json.loads((tiny_demo / "datalist_detection.json").read_text())["test"]
    )  # both ranks


def test_configs_agree_with_each_other_and_with_the_pretraining_defaults(tiny_demo: Path) -> None:
    train, inference = read_config(BUNDLE.name, "train.json"), read_config(BUNDLE.name, "inference.json")
    pretrain = json.loads((REPO_ROOT / "bundles" / "pretrain" / "configs" / "train.json").read_text())
    for key in ("image_encoder", "resize_size", "image_size", "intensity_mean", "intensity_std"):
        assert train[key] == inference[key] == pretrain[key], key
    for key in (
        "fpn_channels",
        "anchor_shapes",
        "class_names",
        "score_threshold",
        "nms_threshold",
        "detections_per_image",
    ):
        assert train[key] == inference[key], key
    assert {k: v for k, v in train["detector"].items() if k != "network"} == {
        k: v for k, v in inference["detector"].items() if k != "network"
    }
    assert train["pretrained_encoder"] == "bundles/pretrain/models/image_encoder.pt" and train["freeze_encoder"] is True
    drop_meta = train["box_pixels"][-1]
    assert drop_meta["_target_"] == "EnsureTyped" and drop_meta["track_meta"] is False  # cached as plain tensors
    assert train["preprocessing"].endswith("+ @box_pixels")
    image = tiny_demo / json.loads((tiny_demo / "datalist_detection.json").read_text())["test"][0]["image"]
    item = {"image": str(image), "box": [[10.0, 12.0, 20.0, 16.0]], "label": [0]}  # xywh in the file's pixels
    assert_inference_preprocesses_as_evaluation(CONFIGS, item)
    meta = read_config(BUNDLE.name, "metadata.json")["network_data_format"]
    assert meta["inputs"]["image"]["spatial_shape"] == [train["image_size"]] * 2
