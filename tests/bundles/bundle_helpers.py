"""Helpers of the bundle tests: the overrides that make a bundle run in seconds, and a CLI runner."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from monai.bundle import ConfigParser
from tiny_models import TINY_ENCODER

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA = REPO_ROOT.parent / "shared" / "monai" / "meta_schema_20240725.json"
"""The bundle metadata schema (``../shared/monai``), which cannot be downloaded here."""
TINY_DEMO = {"demo_n": 40, "demo_size": 64, "demo_plant_phi": True}
"""The tiny demo's generator parameters (``tiny_demo``), so that ``ensure_demo_data`` finds its folder current."""


def tiny_pretrain_overrides(dataset_dir: Path) -> dict[str, Any]:
    """Overrides of bundles/pretrain/configs/train.json for a seconds-long CPU run on ``tiny_demo``."""
    return {
        "dataset_dir": str(dataset_dir),
        "demo_n": 40,
        "demo_size": 64,
        "demo_plant_phi": True,
        "resize_size": 64,
        "image_size": 48,
        "batch_size": 8,
        "val_batch_size": 8,
        "epochs": 2,
        "val_interval": 1,
        "save_interval": 1,
        "max_length": 64,
        "image_encoder#hidden_size": 32,
        "image_encoder#mlp_dim": 64,
        "image_encoder#num_layers": 1,
        "image_encoder#num_heads": 2,
        "text_encoder#config#hidden_size": 32,
        "text_encoder#config#num_hidden_layers": 1,
        "text_encoder#config#num_attention_heads": 2,
        "text_encoder#config#intermediate_size": 64,
        "embed_dim": 16,
    }


def as_cli(overrides: dict[str, Any]) -> list[str]:
    """``--key value`` arguments for ``python -m monai.bundle run``."""
    args: list[str] = []
    for key, value in overrides.items():
        args += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return args


def run_cli(
    args: list[str], timeout: int = 600, env: dict[str, str] | None = None, cwd: Path = REPO_ROOT
) -> subprocess.CompletedProcess:
    """Run a command (from the repository root by default) with the network-free environment of the tests."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        args if args[0] != "python" else [sys.executable, *args[1:]],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# a refresh of Ignite's progress bar; a terminal draws them over each other on one line, but ``subprocess.run(text=True)``
# turns their carriage returns into line ends
_PROGRESS_BAR = re.compile(r"\d+%\|")
# the per-epoch line of sista_monai.handlers.EpochSummaryStatsHandler and the per-iteration line of MONAI's StatsHandler
EPOCH_LINE = re.compile(r"Epoch: (\d+)/(\d+), (\d+) iterations -- ")
ITERATION_LINE = re.compile(r"Epoch: \d+/\d+, Iter: \d+/\d+ -- ")


def console_lines(text: str) -> list[str]:
    """The lines of a captured console that a terminal keeps: neither blank nor a progress-bar refresh."""
    return [line for line in text.splitlines() if line.strip() and not _PROGRESS_BAR.search(line)]


def console_line_budget(epochs: int, validations: int, overrides: int = 0) -> int:
    """Most console lines a bundle run may print: 150 for the README main job (30 epochs, 6 validations, no
    command-line overrides), scaled: a fixed part (set-up, warnings, the test report), one line per epoch,
    three per validation (metrics, key metric, best model saved) and one per override (MONAI's input summary)."""
    return 102 + epochs + 3 * validations + overrides


def assert_quiet_console(console: str, overrides: dict[str, Any], terms: tuple[str, ...]) -> None:
    """Issue 16's console: one line per epoch with ``terms``, validation metrics, no per-iteration line, the budget.

    ``overrides`` are the run's command-line overrides (``epochs``; ``val_interval`` when not the default 1)."""
    lines = console_lines(console)
    epochs, val_interval = int(overrides["epochs"]), int(overrides.get("val_interval", 1))
    validated = set(range(val_interval, epochs + 1, val_interval))
    epoch_lines = [line for line in lines if EPOCH_LINE.search(line)]
    assert [int(EPOCH_LINE.search(line).group(1)) for line in epoch_lines] == list(range(1, epochs + 1)), lines
    assert all(f" {term}: " in line for line in epoch_lines for term in terms), epoch_lines
    assert {int(m.group(1)) for line in lines if (m := re.search(r"Epoch\[(\d+)\] Metrics -- ", line))} >= validated
    assert not any(ITERATION_LINE.search(line) for line in lines)
    assert not any("ignite.engine" in line or "openjpeg" in line for line in lines)
    assert len(lines) <= console_line_budget(epochs, len(validated), overrides=len(overrides)), "\n".join(lines)


INFERENCE_LINE_BUDGET = 150
"""Most console lines an inference run may print with its output captured (issue 27: every bundle's inference)."""


def assert_short_console(result: subprocess.CompletedProcess) -> None:
    """A successful run's captured console (stdout and stderr) within :data:`INFERENCE_LINE_BUDGET` lines, no bar."""
    console = result.stdout + result.stderr
    lines = console_lines(console)
    assert len(lines) <= INFERENCE_LINE_BUDGET, "\n".join(lines)
    assert not _PROGRESS_BAR.search(console), "a progress bar drawn to a captured console"


def export_torchscript(bundle_root: Path, overrides: dict[str, Any]) -> Path:
    """``ckpt_export`` exactly as the bundle docs give it, run in the bundle folder: ``models/model.ts``."""
    result = run_cli(
        cwd=bundle_root,
        args=["python", "-m", "monai.bundle", "ckpt_export", "--net_id", "network_def"]
        + ["--filepath", "models/model.ts", "--ckpt_file", "models/model.pt"]
        + ["--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json"]
        + as_cli(overrides),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return bundle_root / "models" / "model.ts"


def tiny_pretrained_encoder(folder: Path, train_config: Path, tiny_encoder: dict[str, Any]) -> Path:
    """Export a tiny ViT shaped like ``train_config``'s ``image_encoder``, as the pretraining bundle writes it."""
    import json

    import torch

    from sista_monai.io import export_image_encoder
    from sista_monai.networks import ViTImageEncoder

    configured = {k: v for k, v in json.loads(train_config.read_text())["image_encoder"].items() if k != "_target_"}
    torch.manual_seed(0)
    encoder = ViTImageEncoder(**{**configured, "img_size": 128, **tiny_encoder})
    weights, _ = export_image_encoder(
        encoder,
        folder,
        normalization={"mean": 0.5, "std": 0.25},
        extra={"preprocessing": {"resize_longest": 144, "pad_square": 144, "crop": 128}},
    )
    return weights


def assert_no_planted_phi(bundle_root: Path, console: str, demo: Path) -> int:
    """No planted fake-PHI string of ``demo`` (UTF-8 or UTF-16) in any output file of a bundle run or its console.

    Returns the number of files scanned.
    """
    import json

    manifest = json.loads((demo / "phi_manifest.json").read_text())
    planted = [s for s in manifest["strings"] + manifest.get("name_parts", []) if len(s) >= 5]
    assert planted
    files = [p for p in bundle_root.rglob("*") if p.is_file() and "configs" not in p.parts]
    for path in files:
        data = path.read_bytes()
        for value in planted:
            assert value.encode() not in data and value.encode("utf-16-le") not in data, f"{value!r} in {path}"
    for value in planted:
        assert value not in console
    return len(files)


def run_torchrun_two_processes(bundle: str, overrides: dict[str, Any], port: int, bundle_root: Path) -> None:
    """``torchrun --nproc_per_node 2`` of a bundle's train.json + multi_gpu_train.json on CPU (gloo), then the checks
    every bundle shares: success, a plain state dict (no ``module.`` prefix), TensorBoard events from rank 0 only."""
    import torch

    configs = f"['bundles/{bundle}/configs/train.json','bundles/{bundle}/configs/multi_gpu_train.json']"
    result = run_cli(
        [
            "python",
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(port),
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            configs,
        ]
        + as_cli({**overrides, "bundle_root": str(bundle_root)}),
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    state = torch.load(bundle_root / "models" / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state)
    assert len({p.name.split(".")[-2] for p in (bundle_root / "logs").glob("events.*")}) == 1  # rank 0 alone


REALDATA = REPO_ROOT.parent / "shared" / "realdata"


def deploy_inputs(folder: Path, demo: Path, real: list[str]) -> list[Path]:
    """A DICOM folder for the MONAI Deploy tests: one demo DICOM of every encoding profile (MONOCHROME1 and 2,
    with and without Presentation LUT Shape INVERSE and VOI windows, rescale, RLE and JPEG 2000) in ``demo/``
    and, when ``../shared/realdata`` is present, its files matching the patterns ``real`` (relative to it) in
    ``real/``."""
    import pydicom

    from sista_monai.data.demo.dicom import ENCODING_PROFILES

    wanted = {profile.name for profile in ENCODING_PROFILES}
    (folder / "demo").mkdir(parents=True)
    copied = []
    for path in sorted((demo / "images").glob("*.dcm")):
        name = str(pydicom.dcmread(path, stop_before_pixels=True).ManufacturerModelName)
        if name in wanted:
            wanted.remove(name)
            copied.append(Path(shutil.copy(path, folder / "demo" / path.name)))
    assert not wanted, f"the demo has no file of the profiles {sorted(wanted)}"
    if REALDATA.is_dir():
        (folder / "real").mkdir()
        files = sorted(path for pattern in real for path in REALDATA.glob(pattern))
        assert files, real
        copied += [Path(shutil.copy(path, folder / "real" / path.name)) for path in files]
    return copied


def run_deploy_app(task: str, images: Path, out: Path, model: Path) -> subprocess.CompletedProcess:
    """``python -m sista_monai.deploy TASK -i images -o out -m model`` (MONAI Deploy App SDK)."""
    return run_cli(
        ["python", "-m", "sista_monai.deploy", task, "-i", str(images), "-o", str(out), "-m", str(model)], timeout=600
    )


def assert_console_holds_no_planted_phi(console: str, demo: Path) -> None:
    """No planted fake-PHI string of ``demo`` in a console."""
    import json

    manifest = json.loads((demo / "phi_manifest.json").read_text())
    for value in [s for s in manifest["strings"] + manifest.get("name_parts", []) if len(s) >= 5]:
        assert value not in console, value


def assert_sr_references(sr_path: Path, source: Path, text: str) -> None:
    """The SR at ``sr_path`` holds ``text`` and references the instance of ``source`` as its evidence."""
    import pydicom

    report, image = pydicom.dcmread(sr_path), pydicom.dcmread(source, stop_before_pixels=True, force=True)
    assert report.Modality == "SR" and report.StudyInstanceUID == image.StudyInstanceUID
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0]
    series = evidence.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == image.SeriesInstanceUID
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == image.SOPInstanceUID
    assert any(text in str(item.get("TextValue", "")) for item in report.ContentSequence), text


def assert_inference_preprocesses_as_evaluation(configs: Path, item: dict[str, Any]) -> None:
    """inference.json (standalone) prepares the image of ``item`` exactly as train.json's evaluation does.

    Both chains come from the one definition (``sista_monai.transforms.resize_pad_normalize`` and
    ``crop_transforms``); this runs them, as parsed from the two files, on the same file and compares the pixels.
    inference.json starts with MONAI's ``LoadImaged`` (MONAI Deploy drops it by name and hands the array instead).
    """
    parsed = {}
    for name in ("train.json", "inference.json"):
        parser = ConfigParser()
        parser.read_config(configs / name)
        parsed[name] = parser
    evaluation = parsed["train.json"].get_parsed_content("eval_transforms")
    inference = parsed["inference.json"].get_parsed_content("preprocessing")
    assert type(inference.transforms[0]).__name__ == "LoadImaged"
    expected = evaluation(dict(item))["image"]
    actual = inference({"image": item["image"]})["image"]
    assert tuple(actual.shape) == tuple(expected.shape)
    assert torch.equal(torch.as_tensor(actual), torch.as_tensor(expected))


def bundle_command(bundle: str, config: str) -> list[str]:
    """``python -m monai.bundle run --config_file bundles/<bundle>/configs/<config>``, as the README gives it."""
    return ["python", "-m", "monai.bundle", "run", "--config_file", f"bundles/{bundle}/configs/{config}"]


def read_config(bundle: str, name: str) -> dict[str, Any]:
    """A config file of ``bundles/<bundle>/configs`` as JSON."""
    return json.loads((REPO_ROOT / "bundles" / bundle / "configs" / name).read_text())


def train_downstream_bundle(
    bundle: str, demo: Path, root: Path, tiny_encoder: dict[str, Any], overrides: dict[str, Any]
) -> dict[str, Any]:
    """The README's training command from the repository root (tiny overrides) into a copy of a downstream bundle.

    A tiny encoder file stands in for the pretrained one. Returns the copy's root, the encoder file, the overrides
    given to the run and its console.
    """
    source = REPO_ROOT / "bundles" / bundle
    bundle_root = root / bundle
    shutil.copytree(source, bundle_root, ignore=shutil.ignore_patterns("models", "logs", "eval"))
    encoder = tiny_pretrained_encoder(root / "pretrain_models", source / "configs" / "train.json", tiny_encoder)
    overrides = {
        "bundle_root": str(bundle_root),
        "dataset_dir": str(demo),
        **TINY_DEMO,
        "pretrained_encoder": str(encoder),
        "epochs": 2,
        "batch_size": 8,
        "val_batch_size": 8,
        **overrides,
    }
    result = run_cli(bundle_command(bundle, "train.json") + as_cli(overrides))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {
        "bundle_root": bundle_root,
        "encoder": encoder,
        "overrides": overrides,
        "console": result.stdout + result.stderr,
    }


SEGMENTATION_NETWORK = {**{f"image_encoder#{key}": value for key, value in TINY_ENCODER.items()}, "feature_size": 4}
"""The segmentation bundle's network overrides at the tiny sizes (training, inference and packaging layers)."""
VISIBLE_MASKS = {"mask_threshold": 0.3, "min_mask_pixels": 0}
"""Segmentation inference overrides that give masks neither empty nor full on the tiny network (a low threshold,
no size filter): comparisons of masks that can see a difference."""


def train_tiny_segmentation_bundle(demo: Path, root: Path) -> dict[str, Any]:
    """:func:`train_downstream_bundle` of the segmentation bundle at the tiny sizes (:data:`SEGMENTATION_NETWORK`)."""
    overrides = {"min_iterations_per_epoch": 3, **SEGMENTATION_NETWORK}
    return train_downstream_bundle("siim_pneumothorax_segmentation", demo, root, TINY_ENCODER, overrides)


def flat_deploy_inputs(folder: Path, demo: Path, real: list[str]) -> list[Path]:
    """The files of :func:`deploy_inputs` in one flat folder (``folder``), for clients that read no subfolder."""
    staged = deploy_inputs(folder.with_name(folder.name + "_staged"), demo, real)
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(path, folder / path.name)) for path in staged]


def run_packaged_inference(bundle: Path, images: Path, out: Path, cwd: Path) -> subprocess.CompletedProcess:
    """The packaged bundle's inference command as its README gives it: ``python -m monai.bundle run --config_file
    BUNDLE/configs/inference.json --bundle_root BUNDLE --dataset_dir IN --output_dir OUT``."""
    args = ["python", "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json")]
    return run_cli(
        args + ["--bundle_root", str(bundle), "--dataset_dir", str(images), "--output_dir", str(out)], cwd=cwd
    )


def assert_net_in_out_verifies(bundle_root: Path, overrides: dict[str, Any]) -> None:
    """MONAI's ``verify_net_in_out`` accepts ``inference.json``'s network against ``metadata.json``."""
    args = ["python", "-m", "monai.bundle", "verify_net_in_out", "--net_id", "network_def"]
    args += ["--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json", "--device", "cpu"]
    result = run_cli(cwd=bundle_root, args=args + as_cli(overrides))
    assert result.returncode == 0 and "verified with no error" in result.stdout + result.stderr, result.stderr[-3000:]


def assert_metadata_verifies(metadata: Path) -> None:
    """MONAI's ``verify_metadata`` accepts ``metadata`` against the schema (skipped when the schema copy is absent)."""
    if not SCHEMA.is_file():
        pytest.skip(f"the bundle metadata schema copy is not present at {SCHEMA}")
    args = ["python", "-m", "monai.bundle", "verify_metadata", "--meta_file", str(metadata), "--filepath", str(SCHEMA)]
    result = run_cli(args)
    assert result.returncode == 0 and "metadata is verified with no error" in result.stdout + result.stderr
