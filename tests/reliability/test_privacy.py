"""Privacy across the whole pipeline: planted fake PHI never reaches an output.

One demo dataset with planted fake identifiers (patient name, ID, birth date, accession number, institution,
referring physician in the DICOM headers; a clinician's name inside report texts) goes through every stage,
each a real ``python -m monai.bundle`` run with tiny settings: pretraining (training, validation, test
report, heat maps, encoder export), its evaluation and inference configs, then the classification,
segmentation and detection bundles on the exported encoder (training, inference on DICOMs carrying the
identifiers, TorchScript export). Every file written and all console output are then searched for every
planted string: raw bytes (UTF-8 and UTF-16, case-insensitive), the decompressed members of zip archives
(checkpoints, TorchScript), the text chunks of PNG files, the strings of JSON files with word pieces joined
(a name written token by token), and the file names themselves.
"""

from __future__ import annotations

import gzip
import json
import shutil
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bundle_helpers import as_cli, run_cli, tiny_pretrain_overrides
from PIL import Image

SIZES = {"resize_size": 72, "image_size": 64}  # the detector needs a multiple of its 64-pixel stride
TINY_ENCODER = {
    "image_encoder#hidden_size": 32,
    "image_encoder#mlp_dim": 64,
    "image_encoder#num_layers": 1,
    "image_encoder#num_heads": 2,
}
DOWNSTREAM = {
    "rsna_pneumonia_classification": ("datalist_classification.json", {}),
    "siim_pneumothorax_segmentation": ("datalist_segmentation.json", {"feature_size": 4}),
    "rsna_pneumonia_detection": ("datalist_detection.json", {"fpn_channels": 16}),
}

pytestmark = pytest.mark.slow


def _planted(dataset: Path) -> list[str]:
    manifest = json.loads((dataset / "phi_manifest.json").read_text())
    strings = sorted({*manifest["strings"], *manifest["name_parts"], *manifest["birth_dates"]})
    assert len(manifest["items"]) == 40 and all(len(s) >= 5 for s in strings), strings
    return strings


def _contents(path: Path) -> Iterator[tuple[str, bytes]]:
    """(where, bytes) of a file: its name, its bytes, zip members decompressed, PNG text chunks, gzip payload."""
    yield f"{path} (file name)", path.name.encode()
    data = path.read_bytes()
    yield str(path), data
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                yield f"{path}!{info.filename}", archive.read(info)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        with Image.open(path) as image:
            image.load()
            for key, value in image.text.items():
                yield f"{path} (PNG text {key})", f"{key}={value}".encode()
    if data[:2] == b"\x1f\x8b":
        yield f"{path} (gzip)", gzip.decompress(data)
    if path.suffix == ".json":
        yield f"{path} (strings, word pieces joined)", _joined_words(json.loads(data)).encode()


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):  # keys are searched in the raw bytes already
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _joined_words(node: Any) -> str:
    """The JSON's strings in order, WordPiece continuations (``##ine``) glued to the piece before them, so
    that a name written token by token (``a ##m ##b ##ros ##ine``) is found as ``ambrosine``."""
    text = ""
    for value in _strings(node):
        text += value[2:] if value.startswith("##") else " " + value
    return text


def _found(strings: list[str], data: bytes) -> list[str]:
    lowered = data.lower()
    return [s for s in strings if s.lower().encode() in lowered or s.lower().encode("utf-16-le") in lowered]


def _scan(folder: Path, strings: list[str]) -> tuple[int, dict[str, list[str]]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    hits = {where: found for path in files for where, data in _contents(path) if (found := _found(strings, data))}
    return len(files), hits


def _copy_inputs(dataset: Path, datalist: str, folder: Path, reports: bool = False) -> Path:
    """Two test-split DICOMs (their headers carry the planted identifiers), with reports when asked."""
    folder.mkdir(parents=True)
    for item in json.loads((dataset / datalist).read_text())["test"][:2]:
        image = dataset / item["image"]
        shutil.copy(image, folder / image.name)
        if reports:
            (folder / f"{image.stem}.txt").write_text(item["report"])
    return folder


class Pipeline:
    """Runs bundle commands from the repository root, keeping every console output."""

    def __init__(self) -> None:
        self.console: list[str] = []

    def run(self, name: str, args: list[str]) -> None:
        result = run_cli(["python", "-m", "monai.bundle", *args])
        self.console.append(result.stdout + result.stderr)
        assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"


def test_planted_phi_reaches_no_output_of_the_whole_pipeline(
    tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory, record_property: Callable[[str, Any], None]
) -> None:
    dataset = tiny_demo
    strings = _planted(dataset)
    inputs, outputs = tmp_path_factory.mktemp("inputs"), tmp_path_factory.mktemp("outputs")
    pipeline = Pipeline()
    probe = run_cli(["python", "-c", "import sista_monai.offline as o; print('offline', o.network_blocked())"])
    assert probe.stdout.strip() == "offline True"  # every run below has no network

    pretrain_root = outputs / "pretrain"
    pretrain = {
        "bundle_root": str(pretrain_root),
        **tiny_pretrain_overrides(dataset),
        **SIZES,
        "epochs": 1,
        "val_interval": 1,
    }
    train_json = "bundles/pretrain/configs/train.json"
    pipeline.run("pretraining", ["run", "--config_file", train_json, *as_cli(pretrain)])
    layered = f"['{train_json}','bundles/pretrain/configs/evaluate.json']"
    pipeline.run("pretraining evaluation", ["run", "--config_file", layered, *as_cli(pretrain)])
    studies = _copy_inputs(dataset, "datalist_pretrain.json", inputs / "pretrain", reports=True)
    layered = f"['{train_json}','bundles/pretrain/configs/inference.json']"
    inference = {**pretrain, "dataset_dir": str(studies), "tokenizer": str(dataset / "tokenizer")}
    pipeline.run("pretraining inference", ["run", "--config_file", layered, *as_cli(inference)])
    encoder = pretrain_root / "models" / "image_encoder.pt"
    assert encoder.is_file() and (pretrain_root / "models" / "model_best.pt").is_file()
    assert len(list((pretrain_root / "eval" / "inference").glob("*.json"))) == 4

    for bundle, (datalist, network) in DOWNSTREAM.items():
        configs = f"bundles/{bundle}/configs"
        root = outputs / bundle
        train = {
            "bundle_root": str(root),
            "dataset_dir": str(dataset),
            "demo_n": 40,
            "demo_size": 64,
            "demo_plant_phi": True,
            "pretrained_encoder": str(encoder),
            "epochs": 1,
            "batch_size": 8,
            "val_batch_size": 8,
            "min_iterations_per_epoch": 3,
            **SIZES,
            **TINY_ENCODER,
            **network,
        }
        pipeline.run(f"{bundle} training", ["run", "--config_file", f"{configs}/train.json", *as_cli(train)])
        images = _copy_inputs(dataset, datalist, inputs / bundle)
        inference = {"bundle_root": str(root), "dataset_dir": str(images), **SIZES, **TINY_ENCODER, **network}
        pipeline.run(f"{bundle} inference", ["run", "--config_file", f"{configs}/inference.json", *as_cli(inference)])
        assert len(list((root / "eval" / "inference").iterdir())) == 2
    classification = outputs / "rsna_pneumonia_classification"
    pipeline.run(
        "TorchScript export",
        [
            "ckpt_export",
            "--net_id",
            "network_def",
            "--filepath",
            str(classification / "models" / "model.ts"),
            "--ckpt_file",
            str(classification / "models" / "model.pt"),
            "--meta_file",
            "bundles/rsna_pneumonia_classification/configs/metadata.json",
            "--config_file",
            "bundles/rsna_pneumonia_classification/configs/inference.json",
            *as_cli({**SIZES, **TINY_ENCODER}),
        ],
    )

    inputs_scanned, in_inputs = _scan(inputs, strings)  # the control: the scan finds what the inputs carry
    found_in_inputs = set().union(*in_inputs.values())
    manifest = json.loads((dataset / "phi_manifest.json").read_text())["items"]
    for image in inputs.rglob("*.dcm"):
        planted = manifest[image.stem]
        for value in [planted[k] for k in ("PatientID", "AccessionNumber", "InstitutionName", "PatientBirthDate")]:
            assert value in found_in_inputs, f"{value} of {image} not found by the scan"
        if image.with_suffix(".txt").is_file():
            assert set(planted["names_in_report"]) <= found_in_inputs
    assert any(manifest[p.stem]["names_in_report"] for p in inputs.rglob("*.txt"))  # a report names a clinician
    assert inputs_scanned >= 10
    scanned, leaks = _scan(outputs, strings)
    kinds = {p.suffix for p in outputs.rglob("*") if p.is_file()}
    assert {".pt", ".ts", ".json", ".png"} <= kinds and any(
        p.name.startswith("events.out.tfevents") for p in outputs.rglob("*")
    )
    assert scanned >= 40
    record_property("planted_strings", len(strings))
    record_property("output_files_scanned", scanned)
    assert not leaks, f"planted PHI found in outputs: {leaks}"
    console = "\n".join(pipeline.console)
    assert len(pipeline.console) == 10
    assert not _found(strings, console.encode()), (
        f"planted PHI in the console output: {_found(strings, console.encode())}"
    )
