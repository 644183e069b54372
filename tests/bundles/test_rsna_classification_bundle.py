"""The RSNA pneumonia classification bundle end to end on the tiny demo, and its deployment contract.

One tiny training run (a tiny exported "pretrained" encoder, 2 epochs) is shared by the tests of the module:
outputs, evaluation, the inference interface, ``ckpt_export`` / ``verify_net_in_out``, TorchScript equality,
and what MONAI Deploy's bundle operator does with ``models/model.ts`` and ``inference.json``.
"""

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
    assert_net_in_out_verifies,
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
from monai.data import MetaTensor
from monai.transforms import Compose
from tiny_models import TINY_ENCODER
from tracking import assert_mlflow_tracking

BUNDLE = REPO_ROOT / "bundles" / "rsna_pneumonia_classification"
CONFIGS = BUNDLE / "configs"
README_COMMAND = bundle_command("rsna_pneumonia_classification", "train.json")
INFERENCE_COMMAND = bundle_command("rsna_pneumonia_classification", "inference.json")
DEPLOY_REMOVED = ("LoadImage", "SaveImage")  # monai-deploy-app-sdk's DISALLOW_LOAD_SAVE name filter

ENCODER_OVERRIDES = {f"image_encoder#{key}": value for key, value in TINY_ENCODER.items()}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The README's training command from the repository root (tiny overrides) into a copy of the bundle."""
    overrides = {**ENCODER_OVERRIDES}
    return train_downstream_bundle(BUNDLE.name, tiny_demo, tmp_path_factory.mktemp("rsna_cls"), TINY_ENCODER, overrides)


@pytest.fixture(scope="module")
def exported(trained: dict[str, Any]) -> Path:
    """``ckpt_export`` exactly as the docs give it, run in the bundle folder."""
    return export_torchscript(trained["bundle_root"], ENCODER_OVERRIDES)


def _eager_network(bundle_root: Path) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser.update({"bundle_root": str(bundle_root), "device": "$torch.device('cpu')", **ENCODER_OVERRIDES})
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle_root / "models" / "model.pt", weights_only=True))
    return network.eval()


def test_training_outputs(trained: dict[str, Any], tiny_demo: Path) -> None:
    assert_quiet_console(trained["console"], trained["overrides"], terms=("train_loss",))
    bundle_root = trained["bundle_root"]
    state = torch.load(bundle_root / "models" / "model.pt", weights_only=True)
    assert set(state) >= {"head.weight", "head.bias"} and all(torch.is_tensor(v) for v in state.values())
    pretrained = torch.load(trained["encoder"], weights_only=True)
    for key, value in pretrained.items():  # linear probe: the encoder is the pretrained one, unchanged
        assert torch.equal(state[f"encoder.{key}"], value), key

    report = json.loads((bundle_root / "eval" / "metrics.json").read_text())
    test_items = json.loads((tiny_demo / "datalist_classification.json").read_text())["test"]
    assert len(test_items) < 10  # the tiny demo itself was used (not regenerated at the default size)
    assert report["n"] == len(test_items) and report["positives"] == sum(i["label"] for i in test_items)
    assert set(report["metrics"]) == {"auroc", "accuracy", "f1", "sensitivity", "specificity"}
    assert 0.0 <= report["metrics"]["auroc"] <= 1.0
    assert sum(report["confusion"].values()) == report["n"]
    assert report["encoder"]["sha256"] == json.loads(trained["encoder"].with_suffix(".json").read_text())["sha256"]
    assert report["freeze_encoder"] is True and report["label_fraction"] == 100
    assert (bundle_root / "eval" / "roc_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((bundle_root / "logs").glob("events.*"))
    assert "val_auroc" in trained["console"] and "test split" in trained["console"]
    assert "corrupt cache" not in trained["console"].lower()  # the cached items load with weights_only=True


def test_outputs_and_console_hold_no_planted_phi(trained: dict[str, Any], tiny_demo: Path) -> None:
    assert assert_no_planted_phi(trained["bundle_root"], trained["console"], tiny_demo) >= 4


def test_evaluate_config_reproduces_the_test_metrics(trained: dict[str, Any]) -> None:
    bundle_root = trained["bundle_root"]
    expected = json.loads((bundle_root / "eval" / "metrics.json").read_text())["metrics"]
    overrides = {k: v for k, v in trained["overrides"].items() if k != "pretrained_encoder"}
    overrides["pretrained_encoder"] = str(bundle_root / "no_such_encoder.pt")  # evaluation needs only model.pt
    bundle_run(config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")], **overrides)
    assert json.loads((bundle_root / "eval" / "metrics.json").read_text())["metrics"] == pytest.approx(expected)


def test_label_fraction_and_random_init(trained: dict[str, Any], tmp_path: Path) -> None:
    # "null", not None: MONAI's bundle runner drops None overrides, as the command line's `--pretrained_encoder None`
    overrides = {
        **trained["overrides"],
        "bundle_root": str(tmp_path),
        "pretrained_encoder": "null",
        "label_fraction": 1,
        "epochs": 1,
    }
    bundle_run(config_file=str(CONFIGS / "train.json"), **overrides)
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["encoder"] == {"pretrained_encoder": None, "initialisation": "random"}
    assert report["training_images"] == 8 and report["label_fraction"] == 1


def test_tracking_mlflow_receives_the_loss_and_the_final_metrics(trained: dict[str, Any], tmp_path: Path) -> None:
    """MONAI's own ``--tracking mlflow`` as it is: the loss per iteration and its epoch mean, the validation AUROC of
    every epoch, and the test metrics equal to ``eval/metrics.json``."""
    overrides = {**trained["overrides"], "bundle_root": str(tmp_path), "epochs": 2}
    test = {name: ("metrics", name) for name in ("auroc", "accuracy", "f1", "sensitivity", "specificity")}
    assert_mlflow_tracking(README_COMMAND, overrides, {"train_loss"}, {"val_auroc"}, test)


def test_inference_interface_on_demo_images(trained: dict[str, Any], tiny_demo: Path, tmp_path: Path) -> None:
    images = tmp_path / "in"
    images.mkdir()
    for item in json.loads((tiny_demo / "datalist_classification.json").read_text())["test"][:3]:
        shutil.copy(tiny_demo / item["image"], images / Path(item["image"]).name)
    out = tmp_path / "out"
    args = {
        "bundle_root": str(trained["bundle_root"]),
        "dataset_dir": str(images),
        "output_dir": str(out),
        **ENCODER_OVERRIDES,
    }
    result = run_cli(INFERENCE_COMMAND + as_cli(args))
    assert result.returncode == 0, result.stderr[-3000:]
    assert_short_console(result)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{p.stem}.json" for p in images.iterdir())
    for path in out.iterdir():
        record = json.loads(path.read_text())
        assert 0.0 <= record["probability"] <= 1.0 and record["image"] == f"{path.stem}.dcm"


def test_torchscript_export_equals_eager(trained: dict[str, Any], exported: Path) -> None:
    scripted = torch.jit.load(str(exported)).eval()
    eager = _eager_network(trained["bundle_root"])
    image = torch.randn(4, 1, 128, 128)
    with torch.no_grad():
        expected, actual = eager(image), scripted(image)
    assert expected.shape == (4, 1)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_verify_net_in_out_and_metadata(trained: dict[str, Any]) -> None:
    assert_net_in_out_verifies(trained["bundle_root"], ENCODER_OVERRIDES)
    assert_metadata_verifies(CONFIGS / "metadata.json")


def _deploy_like(parser: ConfigParser, name: str) -> Compose:
    """``preprocessing``/``postprocessing`` as MONAI Deploy's bundle operator filters them."""
    compose = parser.get_parsed_content(name)
    return Compose([t for t in compose.transforms if not any(n in type(t).__name__ for n in DEPLOY_REMOVED)])


@pytest.mark.realdata
def test_real_rsna_dicoms_and_the_deployment_contract(
    trained: dict[str, Any], exported: Path, realdata: Path, tmp_path: Path
) -> None:
    """inference.json on the real RSNA DICOMs, then what MONAI Deploy does: model.ts alone + the filtered
    pre/postprocessing on the (W, H, 1) array of each DICOM; the probabilities must agree."""
    dicoms = realdata / "rsna" / "dicoms"
    out = tmp_path / "out"
    args = {
        "bundle_root": str(trained["bundle_root"]),
        "dataset_dir": str(dicoms),
        "output_dir": str(out),
        **ENCODER_OVERRIDES,
    }
    result = run_cli(INFERENCE_COMMAND + as_cli(args))
    assert result.returncode == 0, result.stderr[-3000:]
    files = sorted(dicoms.glob("*.dcm"))
    assert len(files) == 6 and sorted(p.name for p in out.iterdir()) == sorted(f"{p.stem}.json" for p in files)

    model = torch.jit.load(str(exported)).eval()  # loaded alone, no sista_monai network code
    parser = ConfigParser()
    parser.read_config(str(trained["bundle_root"] / "configs" / "inference.json"))
    parser["bundle_root"] = str(trained["bundle_root"])
    preprocessing, postprocessing = _deploy_like(parser, "preprocessing"), _deploy_like(parser, "postprocessing")
    assert "LoadImaged" not in [type(t).__name__ for t in preprocessing.transforms]
    for path in files:
        ds = pydicom.dcmread(path)
        values = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1)) + float(
            ds.get("RescaleIntercept", 0)
        )
        image = MetaTensor(
            torch.from_numpy(np.ascontiguousarray(values.T[..., None])), meta={"original_channel_dim": "no_channel"}
        )
        assert image.shape == (ds.Columns, ds.Rows, 1)
        inputs = preprocessing({"image": image})
        with torch.no_grad():
            prediction = model(inputs["image"][None].as_tensor())
        outputs = postprocessing({"pred": prediction[0], **inputs})
        expected = json.loads((out / f"{path.stem}.json").read_text())
        assert float(outputs["probability"][0]) == pytest.approx(expected["probability"], abs=1e-5), path.name
        # what MONAI Deploy names with metadata.json's channel_def: the class index, not the probability
        assert float(outputs["pred"][0]) == expected["prediction"]


# the no-preamble CR-MONO1-10-chest.dcm goes to the files the application cannot take: the SDK's DICOMDataLoaderOperator
# passes over files without the DICM preamble (the bundle's own inference.json reads it)
DEPLOY_REAL = ["rsna/dicoms/*.dcm", "other_dicom/RG*.dcm", "other_dicom/CR-Modality*.dcm", "other_dicom/[nt]*.dcm"]


def test_monai_deploy_app_equals_the_bundle_inference(
    trained: dict[str, Any], exported: Path, tiny_demo: Path, tmp_path: Path
) -> None:
    """python -m sista_monai.deploy classification on model.ts alone (MONAI Deploy App SDK) gives, for every
    instance, the probability and class the bundle's inference.json gives the same file, and an SR that states
    it and references the instance; every photometric variant of the demo and the real RSNA and other DICOMs.
    A damaged DICOM, a PNG and a DICOM without preamble get their reasons in errors.json and exit status 1."""
    pytest.importorskip("monai.deploy.operators", reason="the [deploy] extra (monai-deploy-app-sdk) is not installed")
    images = tmp_path / "in"
    files = deploy_inputs(images, tiny_demo, DEPLOY_REAL)
    own, app = tmp_path / "own", tmp_path / "app"
    args = {"bundle_root": str(trained["bundle_root"]), "dataset_dir": str(images), "output_dir": str(own)}
    result = run_cli(INFERENCE_COMMAND + as_cli({**args, **ENCODER_OVERRIDES}))
    assert result.returncode == 0, result.stderr[-3000:]
    # files the application cannot take: each gets a line in errors.json, the others their outputs, status 1
    bad = images / "bad"
    bad.mkdir()
    (bad / "broken.dcm").write_bytes(b"not a DICOM file at all" * 10)
    shutil.copy(REPO_ROOT / "bundles" / "pretrain" / "docs" / "plot_auroc.png", bad / "picture.png")
    expected_errors = {"bad/broken.dcm": "not a DICOM file (no preamble", "bad/picture.png": "reads DICOM only"}
    if (REPO_ROOT.parent / "shared" / "realdata").is_dir():
        no_preamble = REPO_ROOT.parent / "shared" / "realdata" / "other_dicom" / "CR-MONO1-10-chest.dcm"
        shutil.copy(no_preamble, bad / no_preamble.name)
        expected_errors["bad/CR-MONO1-10-chest.dcm"] = "passes over"
    deployed = run_deploy_app("classification", images, app, exported)
    assert deployed.returncode == 1, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    assert f"{len(files)} DICOM image instance(s) processed" in deployed.stderr
    assert f"{len(expected_errors)} input file(s) could not be processed" in deployed.stderr
    errors = {e["file"]: e["reason"] for e in json.loads((app / "errors.json").read_text())}
    assert sorted(errors) == sorted(expected_errors)
    assert all(expected_errors[name] in reason for name, reason in errors.items()), errors
    assert_console_holds_no_planted_phi(deployed.stdout + deployed.stderr, tiny_demo)
    for path in files:
        name = path.relative_to(images).with_suffix("").as_posix()
        expected = json.loads((own / f"{name}.json").read_text())
        actual = json.loads((app / f"{name}.json").read_text())
        assert actual["probability"] == pytest.approx(expected["probability"], abs=1e-5), name
        assert (actual["prediction"], actual["label"]) == (expected["prediction"], expected["label"]), name
        assert actual["sop_instance_uid"] == pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert_sr_references(app / f"{name}_sr.dcm", path, f"{expected['label']} (probability")


def test_inference_on_a_pacs_like_export_with_a_bad_file(
    trained: dict[str, Any], realdata: Path, tmp_path: Path
) -> None:
    """Real RSNA DICOMs without extensions in study/series folders, a DICOMDIR, real IU PNGs, one PNG that is not an
    image and a DICOM and a PNG sharing a stem: every good file gets its output, the bad one a line in errors.json,
    and the exit status says that an input failed."""
    dicoms = sorted((realdata / "rsna" / "dicoms").glob("*.dcm"))
    pngs = sorted((realdata / "iu_xray" / "images").glob("*.png"))[:2]
    export = tmp_path / "in"
    series = export / "STUDY1" / "SERIES1"
    series.mkdir(parents=True)
    for index, path in enumerate(dicoms[:2]):
        shutil.copy(path, series / f"IM{index:04d}")
    shutil.copy(dicoms[0], export / "DICOMDIR")  # skipped by its name, as a DICOMDIR index is
    (export / "iu").mkdir()
    for path in pngs:
        shutil.copy(path, export / "iu" / path.name)
    shutil.copy(dicoms[2], export / "pair.dcm")
    shutil.copy(pngs[0], export / "pair.png")
    (export / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (export / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    args = {"bundle_root": str(trained["bundle_root"]), "dataset_dir": str(export), "output_dir": str(out)}
    result = run_cli(INFERENCE_COMMAND + as_cli({**args, **ENCODER_OVERRIDES}))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "finished for 6 inputs; 1 could not be read" in result.stderr and "errors.json" in result.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json"))
    assert written == [
        "STUDY1/SERIES1/IM0000.json",
        "STUDY1/SERIES1/IM0001.json",
        "errors.json",
        *(f"iu/{p.stem}.json" for p in pngs),
        "pair.dcm.json",
        "pair.png.json",
    ]
    errors = json.loads((out / "errors.json").read_text())
    assert [e["file"] for e in errors] == ["broken.png"] and errors[0]["reason"]
    # the same DICOM gives the same probability wherever it lies and whatever its name
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(dicoms[0], single / dicoms[0].name)
    alone = run_cli(
        INFERENCE_COMMAND
        + as_cli({**args, "dataset_dir": str(single), "output_dir": str(tmp_path / "o2"), **ENCODER_OVERRIDES})
    )
    assert alone.returncode == 0, alone.stderr[-3000:]
    expected = json.loads((tmp_path / "o2" / f"{dicoms[0].stem}.json").read_text())["probability"]
    assert json.loads((out / "STUDY1/SERIES1/IM0000.json").read_text())["probability"] == pytest.approx(
        expected, abs=1e-6
    )


def test_torchrun_two_processes_on_cpu(trained: dict[str, Any], tiny_demo: Path, tmp_path: Path) -> None:
    run_torchrun_two_processes(
        "rsna_pneumonia_classification", {**trained["overrides"], "epochs": 1, "batch_size": 4}, 29541, tmp_path
    )
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["n"] == len(
        json.loads((tiny_demo / "datalist_classification.json").read_text())["test"]
    )  # both ranks


def test_configs_agree_with_each_other_and_with_the_pretraining_defaults(tiny_demo: Path) -> None:
    """The default encoder file fits (same architecture and preprocessing as bundles/pretrain), and
    inference.json (standalone) repeats train.json's network and preprocessing."""
    train, inference = read_config(BUNDLE.name, "train.json"), read_config(BUNDLE.name, "inference.json")
    pretrain = json.loads((REPO_ROOT / "bundles" / "pretrain" / "configs" / "train.json").read_text())
    for key in ("image_encoder", "resize_size", "image_size", "intensity_mean", "intensity_std"):
        assert train[key] == inference[key] == pretrain[key], key
    assert train["pretrained_encoder"] == "bundles/pretrain/models/image_encoder.pt"
    image = next(tiny_demo.rglob("*.dcm"))
    assert_inference_preprocesses_as_evaluation(CONFIGS, {"image": str(image), "label": [1.0]})
    assert "_meta_" not in inference and "imports" in inference  # standalone, not layered on train.json
    meta = read_config(BUNDLE.name, "metadata.json")["network_data_format"]
    assert meta["inputs"]["image"]["spatial_shape"] == [train["image_size"]] * 2
    assert meta["outputs"]["pred"]["type"] == "probabilities"


def test_paper_override_matches_the_pretraining_paper_recipe() -> None:
    paper = read_config(BUNDLE.name, "paper.json")
    pretrain_paper = json.loads((REPO_ROOT / "bundles" / "pretrain" / "configs" / "paper.json").read_text())
    for key in ("image_size", "resize_size"):
        assert paper[key] == pretrain_paper[key], key
    # the same architecture; the ImageNet weights initialise pretraining only (downstream loads the SISTA encoder)
    for name in ("paper.json", "paper_resnet50.json"):
        layer, pretrain_layer = (
            read_config(BUNDLE.name, name),
            json.loads((REPO_ROOT / "bundles/pretrain/configs" / name).read_text()),
        )
        assert layer["image_encoder"] == {k: v for k, v in pretrain_layer["image_encoder"].items() if k != "pretrained"}
        assert pretrain_layer["image_encoder"]["pretrained"] == "@imagenet_weights", name
