"""Package a bundle for the MONAI Model Zoo and MONAI Deploy: ``python -m sista_monai.package BUNDLE_DIR --out DIR``.

The packaged folder is self-contained: a user with the folder alone (and PyPI for MONAI, torch and the other
dependencies) installs this project from the wheel inside it and runs ``configs/inference.json`` from any working
folder with ``--bundle_root DIR``. The source bundle is only read; everything is rewritten in the output folder,
so later edits of the source configs flow through the next packaging.

What the packager writes (for ``bundles/pretrain`` and the three downstream bundles):

* ``models/model.pt``: a weights-only state dict of the packaged ``network_def``. A downstream bundle's trained
  ``models/model.pt`` is copied; the pretraining bundle's is the IMAGE-ONLY network
  (:class:`~sista_monai.networks.GlobalImageFeatures` on the encoder of ``models/image_encoder.pt``, read and
  checked against its JSON sidecar by :mod:`sista_monai.io.encoder`). Either way the file must load strictly
  into the packaged ``network_def``.
* ``models/model.ts``: MONAI's own ``ckpt_export`` run on the packaged copy, where TorchScript applies.
* ``configs/``: every config of the source bundle; ``bundle_root`` is ``"."`` (the model-zoo convention: run in
  the bundle folder or pass ``--bundle_root``) and the downstream training configs' ``pretrained_encoder`` is
  ``$@bundle_root + '/models/image_encoder.pt'``. ``inference.json`` stands alone (``bundle_root``, ``device``,
  ``network_def``, ``inferer``, ``output_dir``; override files given with ``--layer``, e.g. ``paper.json``,
  merged in). The pretraining bundle's is its committed ``configs/image_inference.json``, copied: image in,
  global image features out (one JSON per image), the encoder's architecture and preprocessing read from the
  ``models/image_encoder.json`` sidecar; ``models/image_encoder.pt`` and its sidecar are shipped beside
  ``model.pt`` (the same weights; the config loads them, and a downstream bundle can train from them).
* ``configs/metadata.json``: copied and completed: ``monai_version``/``pytorch_version``/``numpy_version`` and
  ``required_packages_version`` (MONAI 1.6's name for ``optional_packages_version``, which MONAI renames on
  reading, and the key the 2024 metadata schema requires) as installed here, ``sista-monai`` included; the
  pretraining bundle's ``network_data_format`` describes the image-only network.
* ``wheels/sista_monai-<version>-py3-none-any.whl``: this project, built offline from its source tree.
* ``LICENSE``, ``docs/`` (the source's, with a section on the packaged bundle appended to ``docs/README.md``),
  ``docs/data_license.txt`` (the terms of the datasets the bundle's ``data_source`` names), ``large_files.yml``.

The model-zoo file rules the packager enforces (after Project-MONAI/model-zoo ``CONTRIBUTING.md`` and
``ci/verify_bundle.py``; a violation stops the packaging with a message naming the file and the rule):

1. necessary files: ``configs/metadata.json`` and ``LICENSE``; preferred files: ``models/model.pt`` and
   ``configs/inference.json``; this project also requires ``docs/README.md`` and ``docs/data_license.txt``;
2. ``metadata.json`` has ``version`` and ``changelog``, and the version has a changelog entry;
3. ``inference.json`` defines ``bundle_root``, ``device``, ``network_def`` and ``inferer``, and ``output_dir``
   for its outputs;
4. no single file is larger than 25 MB (``--size-limit-mb``): every larger file is listed in
   ``large_files.yml`` (``path``, ``url``, ``hash_val`` = its SHA-256, ``hash_type: sha256``; the files stay in
   the folder here, and are left out of a pull request to the zoo, which downloads them from ``url``);
5. no config value is an absolute path or a path into this repository's ``bundles/`` folder (paths are
   resolved from ``bundle_root``).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from sista_monai.errors import BundlePackagingError
from sista_monai.io.files import json_text, sha256_file

__all__ = [
    "LARGE_FILES",
    "SIZE_LIMIT_MB",
    "check_bundle_folder",
    "data_license_text",
    "main",
    "package_bundle",
]

logger = logging.getLogger(__name__)

SIZE_LIMIT_MB = 25.0
"""The model zoo's limit for one file of a bundle (GitHub's), in MiB."""

LARGE_FILES = "large_files.yml"
NECESSARY_FILES = ("configs/metadata.json", "LICENSE")
PREFERRED_FILES = ("models/model.pt", "configs/inference.json")
DEMO_TOKENIZER = "data/demo/tokenizer"
"""The demo pretraining's tokenizer folder, relative to the project root (the default of ``--tokenizer``)."""
PROJECT_FILES = ("docs/README.md", "docs/data_license.txt")
INFERENCE_KEYS = ("bundle_root", "device", "network_def", "inferer", "output_dir")
PRETRAINED_ENCODER = "$@bundle_root + '/models/image_encoder.pt'"
WHEEL_SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", "sista_monai", "transforms", "data/splits")
"""What building the wheel needs from the source tree (copied, so that building leaves nothing in it)."""

DATASET_TERMS: dict[str, tuple[str, str]] = {
    "MIMIC-CXR": (
        "MIMIC-CXR (PhysioNet)",
        "PhysioNet Credentialed Health Data License 1.5.0 "
        "(https://physionet.org/content/mimic-cxr/view-license/2.0.0/). Access requires a credentialed PhysioNet "
        "account, the required training and the signed data use agreement; the data may not be shared with "
        "anyone who has not, and no attempt may be made to identify any individual.",
    ),
    "RSNA Pneumonia": (
        "RSNA Pneumonia Detection Challenge (Kaggle)",
        "the Kaggle competition rules and the RSNA terms of use "
        "(https://www.kaggle.com/competitions/rsna-pneumonia-detection-challenge/rules): non-commercial research "
        "and educational use, with attribution to the RSNA.",
    ),
    "SIIM": (
        "SIIM-ACR Pneumothorax Segmentation (Kaggle)",
        "the Kaggle competition rules and the SIIM terms of use "
        "(https://www.kaggle.com/competitions/siim-acr-pneumothorax-segmentation/rules): non-commercial research "
        "and educational use, with attribution to the SIIM and the ACR.",
    ),
}
"""Datasets a bundle's ``metadata.json`` ``data_source`` may name → (name, terms)."""

DEMO_TERMS = (
    "Generated demo data (sista_monai.data.demo)",
    "synthetic images and reports generated by this project's code; no patient data. They come under the "
    "project's licence (see LICENSE).",
)


def _fail(source: object, reason: str) -> BundlePackagingError:
    return BundlePackagingError(source, reason)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise _fail(path, "missing")
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _fail(path, f"not valid JSON ({err})") from err
    if not isinstance(content, dict):
        raise _fail(path, f"expected a JSON object, found {type(content).__name__}")
    return content


def _write_json(path: Path, content: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json_text(content, indent=4, sort_keys=False))


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _mib(size: int) -> str:
    return f"{size / 2**20:.2f} MiB"


def _strings(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Every string of a config with its ``#``-joined id."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{key}#{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{key}#{i}")


def _path_problems(config: dict[str, Any], name: str) -> list[str]:
    """Rule 5: no absolute path and no path into this repository's ``bundles/`` folder in a config."""
    problems = []
    for key, value in _strings(config):
        text = value.strip()
        if re.search(r"(^|['\"/ ])bundles/", text):
            problems.append(f"{name}: {key} = {value!r} points into the repository's bundles/ folder")
        elif text.startswith("/") or re.match(r"^[A-Za-z]:\\", text):
            problems.append(f"{name}: {key} = {value!r} is an absolute path")
    return problems


def _large_file_entries(folder: Path) -> tuple[list[dict[str, Any]], list[str]]:
    import yaml

    path = folder / LARGE_FILES
    if not path.is_file():
        return [], [f"{LARGE_FILES}: missing"]
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        return [], [f"{LARGE_FILES}: not valid YAML ({err})"]
    entries = content.get("large_files") if isinstance(content, dict) else None
    if not isinstance(entries, list):
        return [], [f"{LARGE_FILES}: expected a 'large_files' list"]
    return entries, []


def check_bundle_folder(folder: str | Path, size_limit_mb: float = SIZE_LIMIT_MB) -> list[str]:
    """The model-zoo file rules (see the module docstring) checked on a packaged bundle folder.

    Args:
        folder: the bundle folder.
        size_limit_mb: the largest file the folder may hold without a ``large_files.yml`` entry, in MiB.

    Returns:
        One line per violated rule, naming the file; empty when the folder passes.
    """
    folder = Path(folder)
    problems: list[str] = []
    entries, yaml_problems = _large_file_entries(folder)
    problems += yaml_problems
    listed: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not {"path", "url", "hash_val", "hash_type"} <= set(entry):
            problems.append(f"{LARGE_FILES}: entry {entry!r} lacks path, url, hash_val or hash_type")
            continue
        listed[str(entry["path"])] = entry
        target = folder / str(entry["path"])
        if entry["hash_type"] != "sha256":
            problems.append(f"{LARGE_FILES}: {entry['path']} has hash_type {entry['hash_type']!r}, expected sha256")
        elif not target.is_file():
            problems.append(f"{LARGE_FILES}: {entry['path']} is listed but not in the folder")
        elif sha256_file(target) != entry["hash_val"]:
            problems.append(f"{LARGE_FILES}: {entry['path']} SHA-256 differs from hash_val {entry['hash_val']}")
    for name in NECESSARY_FILES + PREFERRED_FILES + PROJECT_FILES:
        if not (folder / name).is_file() and name not in listed:
            problems.append(f"{name}: missing")
    limit = int(size_limit_mb * 2**20)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if path.stat().st_size > limit and relative not in listed:
            problems.append(
                f"{relative}: {_mib(path.stat().st_size)} is over the {size_limit_mb:g} MiB limit and not listed in "
                f"{LARGE_FILES}"
            )
    metadata_path = folder / "configs" / "metadata.json"
    if metadata_path.is_file():
        metadata = json.loads(metadata_path.read_text())
        if "version" not in metadata or "changelog" not in metadata:
            problems.append("configs/metadata.json: 'version' or 'changelog' is missing")
        elif metadata["version"] not in metadata["changelog"]:
            problems.append(f"configs/metadata.json: version {metadata['version']} has no changelog entry")
    inference_path = folder / "configs" / "inference.json"
    if inference_path.is_file():
        inference = json.loads(inference_path.read_text())
        missing = [key for key in INFERENCE_KEYS if key not in inference]
        if missing:
            problems.append(f"configs/inference.json: lacks {missing}")
    for config_path in sorted((folder / "configs").glob("*.json")):
        problems += _path_problems(json.loads(config_path.read_text()), f"configs/{config_path.name}")
    return problems


def data_license_text(data_source: str, bundle_name: str) -> str:
    """``docs/data_license.txt``: the terms of every dataset ``data_source`` (``metadata.json``) names."""
    datasets = [DEMO_TERMS] + [terms for key, terms in DATASET_TERMS.items() if key.lower() in data_source.lower()]
    lines = [
        f"Data licences of the {bundle_name} bundle",
        "",
        "This bundle contains no data. The datasets below are the ones it is trained or evaluated on (its",
        "metadata.json data_source); whoever uses them accepts their terms, obtained from their providers.",
        "",
    ]
    for name, terms in datasets:
        lines += [f"* {name}: {terms}", ""]
    lines.append("Third-party licence terms of a dataset apply to it alone; the code and weights are under LICENSE.")
    return "\n".join(lines) + "\n"


def _is_pretraining(bundle: Path) -> bool:
    train = bundle / "configs" / "train.json"
    if not train.is_file():
        return False
    target = _read_json(train).get("network_def", {})
    return isinstance(target, dict) and str(target.get("_target_", "")).endswith("SISTAModel")


def _merge_layers(config: dict[str, Any], layers: Sequence[Path]) -> dict[str, Any]:
    """``--layer`` files merged into a config: the ids whose first part the config defines (others skipped)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser(config)
    for layer in layers:
        if not layer.is_file():
            raise _fail(layer, "layer file not found")
        try:
            content = ConfigParser.load_config_file(str(layer))
        except Exception as err:  # noqa: BLE001 - JSON and YAML parser errors alike
            raise _fail(layer, f"not a readable config ({err})") from err
        for key, value in content.items():
            if re.split(r"#|::", key)[0] in config:
                parser[key] = value
            else:
                logger.info("%s: %s is not an id of inference.json; left out", layer.name, key)
    return dict(parser.get())


IMAGE_INFERENCE = "image_inference.json"
"""The pretraining bundle's committed image-only inference config: the packaged bundle's ``inference.json``."""


def _pretraining_inference(bundle: Path, sidecar: dict[str, Any], weights: Path) -> dict[str, Any]:
    """The packaged pretraining bundle's standalone, image-only ``inference.json``: the committed
    ``configs/image_inference.json``, copied (``bundle_root`` → ``"."``), after checking that the encoder's sidecar
    records what it reads (preprocessing sizes, intensity normalisation)."""
    sizes = sidecar.get("preprocessing")
    normalization = sidecar.get("normalization")
    if not isinstance(sizes, dict) or not {"resize_longest", "pad_square", "crop"} <= set(sizes):
        raise _fail(weights.with_suffix(".json"), "the sidecar records no preprocessing sizes (resize_longest, ...)")
    if not isinstance(normalization, dict) or not {"mean", "std"} <= set(normalization):
        raise _fail(weights.with_suffix(".json"), "the sidecar records no intensity normalisation (mean, std)")
    source = bundle / "configs" / IMAGE_INFERENCE
    if not source.is_file():
        raise _fail(source, "missing from the pretraining bundle (its image-only inference config)")
    return _rewrite_config(_read_json(source))


TEXT_CONFIGS = ("zero_shot.json", "retrieval.json", "grounding.json")
"""The pretraining bundle's configs that need the text side (layered on ``train.json``)."""

PACKAGED_SISTA = "$@bundle_root + '/models/sista.pt'"
PACKAGED_TOKENIZER = "$@bundle_root + '/models/tokenizer'"


def _write_pretraining_text_model(bundle: Path, out: Path, tokenizer: Path) -> None:
    """``models/sista.pt`` (the whole SISTA model's weights, from ``models/checkpoint_final.pt``: image and text
    encoders, projection heads) and ``models/tokenizer/`` (the tokenizer the text encoder was trained with)."""
    from sista_monai.io import atomic_write_bytes, load_weights_only, move_loss_temperature, state_bytes
    from sista_monai.io.weights import nonfinite_entries

    checkpoint = bundle / "models" / "checkpoint_final.pt"
    if not checkpoint.is_file():
        raise _fail(checkpoint, "missing: train the pretraining bundle first (the text side is packaged from it)")
    try:
        state = load_weights_only(checkpoint, what="the SISTA checkpoint")
    except ValueError as err:
        raise _fail(checkpoint, str(err)) from err
    if isinstance(state, dict) and isinstance(state.get("network"), dict):
        state = move_loss_temperature(state)["network"]
    if not isinstance(state, dict) or not state:
        raise _fail(checkpoint, "holds no network weights")
    bad = nonfinite_entries(state)
    if bad:
        raise _fail(checkpoint, f"non-finite weights in {bad[:3]}")
    atomic_write_bytes(out / "models" / "sista.pt", state_bytes(state))
    if not (tokenizer / "tokenizer_config.json").is_file():
        raise _fail(tokenizer, "not a tokenizer folder (no tokenizer_config.json); pass the run's with --tokenizer")
    shutil.copytree(tokenizer, out / "models" / "tokenizer")


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    """A text-side config of the package: the packaged weights and tokenizer, no demo text-encoder pretraining."""
    return {**config, "checkpoint": PACKAGED_SISTA, "tokenizer": PACKAGED_TOKENIZER, "text_pretrained": None}


def _check_text_model_fits(out: Path) -> None:
    """``models/sista.pt`` loads into the network of the packaged ``train.json`` + ``zero_shot.json``."""
    from monai.bundle import ConfigParser

    from sista_monai.io import load_network_weights

    parser = ConfigParser()
    parser.read_config([str(out / "configs" / "train.json"), str(out / "configs" / "zero_shot.json")])
    parser.update({"bundle_root": str(out), "device": "$torch.device('cpu')"})
    try:
        load_network_weights(out / "models" / "sista.pt", parser.get_parsed_content("network_def"))
    except ValueError as err:
        raise _fail(
            out / "models" / "sista.pt",
            f"does not fit the packaged train.json (trained with an override file? pass it with --layer): {err}",
        ) from err


def _pretraining_metadata(metadata: dict[str, Any], sidecar: dict[str, Any]) -> dict[str, Any]:
    """The metadata of the image-only network: one image in, ``out_channels`` global features out."""
    crop = int(sidecar["preprocessing"]["crop"])
    image = dict(metadata.get("network_data_format", {}).get("inputs", {}).get("image", {}))
    image.update({"num_channels": int(sidecar.get("in_channels", 1)), "spatial_shape": [crop, crop]})
    channels = int(sidecar["out_channels"])
    return {
        **metadata,
        "pred_classes": f"{channels} global image features of the pretrained encoder (the downstream heads' input)",
        "network_data_format": {
            "inputs": {"image": image},
            "outputs": {
                "pred": {
                    "type": "embedding",
                    "format": "global image features",
                    "num_channels": channels,
                    "spatial_shape": [1],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                }
            },
        },
    }


def _parsed_network(folder: Path) -> Any:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(folder / "configs" / "inference.json"))
    parser.update({"bundle_root": str(folder), "device": "$torch.device('cpu')"})
    return parser.get_parsed_content("network_def")


def _write_pretraining_model(bundle: Path, out: Path) -> dict[str, Any]:
    """``models/model.pt`` of the image-only network from ``models/image_encoder.pt`` (sidecar checked)."""
    from sista_monai.errors import EncoderMismatchError, NonFiniteWeightsError
    from sista_monai.io import load_pretrained_encoder, read_encoder_sidecar, save_weights
    from sista_monai.networks import GlobalImageFeatures, build_image_encoder

    weights = bundle / "models" / "image_encoder.pt"
    try:
        sidecar = read_encoder_sidecar(weights)
        encoder = build_image_encoder(dict(sidecar["architecture"]))
        load_pretrained_encoder(encoder, weights)
        save_weights(GlobalImageFeatures(encoder), out / "models" / "model.pt")
    except (FileNotFoundError, EncoderMismatchError, NonFiniteWeightsError) as err:
        raise _fail(weights, str(err)) from err
    if "out_channels" not in sidecar or "preprocessing" not in sidecar:
        raise _fail(weights.with_suffix(".json"), "the sidecar records no out_channels or preprocessing")
    return sidecar


def _check_model_fits(out: Path, source: Path) -> None:
    """The packaged ``model.pt`` loads strictly into the packaged ``network_def``."""
    import torch

    from sista_monai.io import load_weights_only

    try:
        state = load_weights_only(out / "models" / "model.pt", what="model weights")
    except ValueError as err:
        raise _fail(source, str(err)) from err
    network = _parsed_network(out)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise _fail(
            source,
            "does not fit the network_def of configs/inference.json (were the weights trained with an override "
            f"file? pass it with --layer): {' '.join(line.strip() for line in first[:3])}",
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _fail(source, "not a plain state dict of tensors")


def _export_torchscript(out: Path) -> str | None:
    """MONAI's ``ckpt_export`` on the packaged copy; ``None`` when it worked, else the reason."""
    from monai.bundle import ckpt_export

    try:
        ckpt_export(
            net_id="network_def",
            filepath=str(out / "models" / "model.ts"),
            ckpt_file=str(out / "models" / "model.pt"),
            meta_file=str(out / "configs" / "metadata.json"),
            config_file=str(out / "configs" / "inference.json"),
            bundle_root=str(out),
        )
    except Exception as err:  # noqa: BLE001 - any failure of the export means "TorchScript does not apply"
        (out / "models" / "model.ts").unlink(missing_ok=True)
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    return None


def _verify_net_in_out(out: Path) -> str | None:
    """MONAI's ``verify_net_in_out`` on the packaged copy; ``None`` when it passed, else the reason."""
    from monai.bundle import verify_net_in_out

    try:
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(out / "configs" / "metadata.json"),
            config_file=str(out / "configs" / "inference.json"),
            device="cpu",
            bundle_root=str(out),
        )
    except Exception as err:  # noqa: BLE001 - any failure means the check does not apply to this network
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    return None


def _project_root(project: Path | None) -> Path:
    import sista_monai

    root = project if project is not None else Path(sista_monai.__file__).resolve().parents[1]
    if not (root / "setup.cfg").is_file():
        raise _fail(root, "no sista-monai source tree here (setup.cfg missing); pass the checkout with --project")
    return root


def _build_wheel(project: Path, dest: Path) -> Path:
    """Build the sista-monai wheel offline (no index, no build isolation) from a copy of the source tree."""
    with tempfile.TemporaryDirectory(prefix="sista_wheel_") as tmp:
        source = Path(tmp) / "source"
        for name in WHEEL_SOURCES:
            if not (project / name).exists():
                raise _fail(project / name, "missing from the source tree; the wheel cannot be built")
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            if (project / name).is_dir():
                shutil.copytree(project / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(project / name, source / name)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--quiet"]
            + [str(source), "--wheel-dir", str(dest)],
            capture_output=True,
            text=True,
            cwd=tmp,
        )
    wheels = sorted(dest.glob("sista_monai-*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        reason = (result.stderr.strip().splitlines() or ["no wheel written"])[-1]
        raise _fail(project, f"building the wheel failed ({reason})")
    return wheels[0]


def _metadata(source: dict[str, Any], path: Path, wheel: Path) -> dict[str, Any]:
    """Copied metadata completed with the installed versions (and ``sista-monai`` = the wheel's version)."""
    for key in ("version", "changelog"):
        if key not in source:
            raise _fail(path, f"no {key!r}: the model zoo needs a version and its changelog")
    if not isinstance(source["changelog"], dict) or source["version"] not in source["changelog"]:
        raise _fail(path, f"version {source['version']} has no changelog entry; add one before packaging")
    wheel_version = wheel.name.split("-")[1]
    installed = _installed("sista-monai")
    if installed is not None and installed != wheel_version:
        raise _fail(wheel, f"the source tree is version {wheel_version}, the installed sista-monai {installed}")
    packages = dict(source.get("required_packages_version", {}))
    packages.update(source.pop("optional_packages_version", {}) or {})
    for name in packages:
        packages[name] = _installed(name) or packages[name]
    packages["sista-monai"] = wheel_version
    metadata = dict(source)
    metadata["required_packages_version"] = dict(sorted(packages.items()))
    for key, name in (("monai_version", "monai"), ("pytorch_version", "torch"), ("numpy_version", "numpy")):
        found = _installed(name)
        if found:
            metadata[key] = found.split("+")[0]
    return metadata


def _rewrite_config(config: dict[str, Any]) -> dict[str, Any]:
    """``bundle_root`` → ``"."``; a downstream ``pretrained_encoder`` path → the packaged bundle's models/."""
    config = dict(config)
    if "bundle_root" in config:
        config["bundle_root"] = "."
    if isinstance(config.get("pretrained_encoder"), str) and config["pretrained_encoder"].lower() not in (
        "",
        "none",
        "null",
    ):
        config["pretrained_encoder"] = PRETRAINED_ENCODER
    return config


def _readme_section(summary: dict[str, Any], pretraining: bool) -> str:
    wheel = summary["wheel"]
    lines = [
        "",
        "## This packaged bundle",
        "",
        "Written by `python -m sista_monai.package` (a self-contained copy for the MONAI Model Zoo and MONAI Deploy).",
        "",
        "Install this project (MONAI, torch and the other dependencies come from PyPI), in the bundle folder:",
        "",
        f"    pip install wheels/{wheel}",
        "",
        "Run inference from any folder (`bundle_root` defaults to `.`, the bundle folder):",
        "",
        "    python -m monai.bundle run --config_file BUNDLE/configs/inference.json --bundle_root BUNDLE \\",
        "        --dataset_dir IMAGES --output_dir OUTPUT",
        "",
    ]
    if pretraining:
        lines += [
            "The packaged network is IMAGE-ONLY: `network_def` is `sista_monai.networks.GlobalImageFeatures` on the",
            "pretrained image encoder (`models/image_encoder.pt` of the pretraining run), and `inference.json` writes",
            "`<image>.json` = `{image, embed_dim, embedding}` (the global image features the downstream heads use)",
            "per input image.",
            "",
            "The text side is packaged too: `models/sista.pt` (the whole SISTA model: both encoders and the heads)",
            "and `models/tokenizer/`. Zero-shot classification, retrieval and phrase grounding run from this folder",
            "alone, layered on `configs/train.json`:",
            "",
            "    python -m monai.bundle run --config_file \"['BUNDLE/configs/train.json','BUNDLE/configs/zero_shot.json']\" \\",
            "        --bundle_root BUNDLE --dataset_dir IMAGES --output_dir OUTPUT",
            "",
            '(`retrieval.json` with `--report_bank REPORTS`, `grounding.json` with `--phrase "..."`).',
            "`configs/train.json` retrains from scratch as in the repository.",
            "",
        ]
    elif summary["pretrained_encoder"]:
        lines += [
            "Retraining (`configs/train.json`) starts from the pretrained encoder shipped in this folder,",
            "`models/image_encoder.pt` with its `image_encoder.json` sidecar (`--pretrained_encoder null`: random",
            "initialisation).",
            "",
        ]
    else:
        lines += [
            "Retraining (`configs/train.json`) starts from the pretrained encoder at",
            "`models/image_encoder.pt` (with its `image_encoder.json` sidecar) of this folder, which is not shipped:",
            "copy the pretraining bundle's files there or pass `--pretrained_encoder PATH` (a required override;",
            "`null` trains from random initialisation).",
            "",
        ]
    if summary["inferer"]:
        lines += [f"`inferer` was added to `inference.json` for the model zoo: {summary['inferer']}.", ""]
    torchscript, shapes = summary["torchscript"], summary["verify_net_in_out"]
    lines.append(
        "- `models/model.ts`: made by MONAI's `ckpt_export` from this folder."
        if torchscript is None
        else f"- TorchScript does not apply to this network (`ckpt_export` failed: {torchscript}); no `models/model.ts`."
    )
    lines.append(
        "- `verify_net_in_out` passes on `network_def` with the shapes of `configs/metadata.json`."
        if shapes is None
        else "- `verify_net_in_out` does not apply: it checks one output tensor with `num_channels` channels, and "
        f"this network's output is not that ({shapes})."
    )
    lines += [
        "- `large_files.yml` lists every file over the model zoo's 25 MB limit with its SHA-256 (fill in `url` where",
        "  the file is uploaded).",
        "- `docs/data_license.txt`: the terms of the datasets this bundle uses.",
        "",
        "| file | size | SHA-256 |",
        "|---|---|---|",
    ]
    lines += [f"| `{name}` | {size} | `{digest}` |" for name, size, digest in summary["weights"]]
    return "\n".join(lines) + "\n"


def package_bundle(
    bundle_dir: str | Path,
    out: str | Path,
    layers: Sequence[str | Path] = (),
    pretrained_encoder: str | Path | None = None,
    size_limit_mb: float = SIZE_LIMIT_MB,
    large_file_url: str | None = None,
    project: str | Path | None = None,
    overwrite: bool = False,
    tokenizer: str | Path | None = None,
) -> dict[str, Any]:
    """Write the self-contained, model-zoo-checked copy of ``bundle_dir`` to ``out`` (see the module docstring).

    Args:
        bundle_dir: a bundle folder (``configs/``, ``models/``, ``docs/``, ``LICENSE``).
        out: the output folder; it must not exist (or be empty) unless ``overwrite``.
        layers: override files merged into the packaged ``inference.json`` (those the weights were trained with).
        pretrained_encoder: a downstream bundle's pretrained ``image_encoder.pt`` (sidecar beside it) to ship in
            ``models/`` for retraining; ``None`` leaves it a documented required override.
        size_limit_mb: the model zoo's per-file limit (files over it go to ``large_files.yml``).
        large_file_url: URL prefix where the large files will be uploaded (``<prefix>/<path>``), else empty urls.
        project: the sista-monai source tree the wheel is built from (default: the one this module runs from).
        overwrite: replace an existing output folder.
        tokenizer: the pretraining bundle's tokenizer folder, shipped with the text side (default: the demo's,
            ``data/demo/tokenizer`` of ``project``).

    Returns:
        A summary: the output folder, the wheel, ``torchscript`` and ``verify_net_in_out`` (``None`` when they
        apply, else the reason), the weights files with size and SHA-256, and the large files.

    Raises:
        BundlePackagingError: a missing or invalid input, or a model-zoo rule the result would violate.
    """
    bundle, out = Path(bundle_dir), Path(out)
    if not bundle.is_dir():
        raise _fail(bundle, "not a bundle folder")
    for name in ("configs/metadata.json", "configs/inference.json", "LICENSE", "docs/README.md"):
        if not (bundle / name).is_file():
            raise _fail(bundle / name, "missing from the bundle")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise _fail(out, "exists and is not empty; pass --overwrite to replace it")
    if out.resolve() == bundle.resolve() or bundle.resolve() in out.resolve().parents:
        raise _fail(out, "the output folder must lie outside the bundle")
    root = _project_root(Path(project) if project is not None else None)
    pretraining = _is_pretraining(bundle)
    source_metadata = _read_json(bundle / "configs" / "metadata.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    work.chmod(0o755)
    inferer = ""
    try:
        shutil.copy2(bundle / "LICENSE", work / "LICENSE")
        shutil.copytree(bundle / "docs", work / "docs", ignore=shutil.ignore_patterns("__pycache__"))
        (work / "models").mkdir()
        for config_path in sorted((bundle / "configs").iterdir()):
            if not config_path.is_file() or config_path.name in ("metadata.json", "inference.json", IMAGE_INFERENCE):
                continue
            target = work / "configs" / config_path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if config_path.suffix == ".json":
                config = _rewrite_config(_read_json(config_path))
                if pretraining and config_path.name == "train.json":
                    config = _merge_layers(config, [Path(p) for p in layers])
                elif pretraining and config_path.name in TEXT_CONFIGS:
                    config = _text_config(config)
                _write_json(target, config)
            else:
                shutil.copy2(config_path, target)
        wheel = _build_wheel(root, work / "wheels")
        metadata = _metadata(source_metadata, bundle / "configs" / "metadata.json", wheel)
        if pretraining:
            sidecar = _write_pretraining_model(bundle, work)
            inference = _pretraining_inference(bundle, sidecar, bundle / "models" / "image_encoder.pt")
            for name in ("image_encoder.pt", "image_encoder.json"):  # what the copied config loads
                shutil.copy2(bundle / "models" / name, work / "models" / name)
            _write_pretraining_text_model(bundle, work, Path(tokenizer) if tokenizer else root / DEMO_TOKENIZER)
            metadata = _pretraining_metadata(metadata, sidecar)
        else:
            inference = _merge_layers(_read_json(bundle / "configs" / "inference.json"), [Path(p) for p in layers])
            inference = _rewrite_config(inference)
            if "inferer" not in inference and "detector" in inference:
                inference["inferer"] = "@detector"
                inferer = "`@detector`, MONAI's RetinaNet detector, which runs the network and decodes its boxes"
            elif "inferer" not in inference:
                inference["inferer"] = {"_target_": "SimpleInferer"}
                inferer = "MONAI's `SimpleInferer` (the network applied to the whole image)"
            if not (bundle / "models" / "model.pt").is_file():
                raise _fail(bundle / "models" / "model.pt", "missing: train the bundle first")
            shutil.copy2(bundle / "models" / "model.pt", work / "models" / "model.pt")
        _write_json(work / "configs" / "inference.json", inference)
        _write_json(work / "configs" / "metadata.json", metadata)
        if pretrained_encoder is not None and not pretraining:
            encoder = Path(pretrained_encoder)
            for source in (encoder, encoder.with_suffix(".json")):
                if not source.is_file():
                    raise _fail(source, "not found (the pretrained encoder and its sidecar)")
            shutil.copy2(encoder, work / "models" / "image_encoder.pt")
            shutil.copy2(encoder.with_suffix(".json"), work / "models" / "image_encoder.json")
        _check_model_fits(work, bundle / "models" / ("image_encoder.pt" if pretraining else "model.pt"))
        if pretraining:
            _check_text_model_fits(work)
        torchscript = _export_torchscript(work)
        shapes = _verify_net_in_out(work)
        (work / "docs" / "data_license.txt").write_text(
            data_license_text(str(source_metadata.get("data_source", "")), bundle.name)
        )
        limit = int(size_limit_mb * 2**20)
        large = []
        for path in sorted(p for p in work.rglob("*") if p.is_file()):
            if path.stat().st_size > limit:
                relative = path.relative_to(work).as_posix()
                url = f"{large_file_url.rstrip('/')}/{relative}" if large_file_url else ""
                large.append({"path": relative, "url": url, "hash_val": sha256_file(path), "hash_type": "sha256"})
        import yaml

        (work / LARGE_FILES).write_text(
            "# files over the model zoo's per-file limit: left out of a pull request, downloaded from url\n"
            + yaml.safe_dump({"large_files": large}, sort_keys=False)
        )
        weights = [
            (path.relative_to(work).as_posix(), _mib(path.stat().st_size), sha256_file(path))
            for path in sorted(p for p in (work / "models").rglob("*") if p.is_file())
        ]
        summary = {
            "bundle": bundle.name,
            "out": str(out),
            "wheel": wheel.name,
            "torchscript": torchscript,
            "verify_net_in_out": shapes,
            "weights": weights,
            "large_files": [entry["path"] for entry in large],
            "pretrained_encoder": pretrained_encoder is not None and not pretraining,
            "inferer": inferer,
        }
        with (work / "docs" / "README.md").open("a") as readme:
            readme.write(_readme_section(summary, pretraining))
        problems = check_bundle_folder(work, size_limit_mb)
        if problems:
            raise _fail(out, "the packaged bundle breaks the model-zoo rules:\n  - " + "\n  - ".join(problems))
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    finally:
        if work.exists():
            shutil.rmtree(work)
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sista_monai.package",
        description=(
            "Write a self-contained copy of a bundle (bundles/pretrain or a downstream bundle) that the MONAI Model "
            "Zoo checks accept: models/model.pt (+ model.ts where TorchScript applies), standalone configs, "
            "completed metadata, large_files.yml, docs/data_license.txt and a wheel of sista-monai."
        ),
        epilog="example: python -m sista_monai.package bundles/rsna_pneumonia_classification --out dist/rsna_cls",
    )
    parser.add_argument("bundle_dir", help="the bundle folder (configs/, models/, docs/, LICENSE)")
    parser.add_argument("--out", required=True, help="the output folder (must not exist or be empty)")
    parser.add_argument(
        "--layer",
        action="append",
        default=[],
        metavar="FILE",
        help="an override file the weights were trained with (e.g. configs/paper.json), merged into inference.json",
    )
    parser.add_argument(
        "--pretrained-encoder",
        metavar="PT",
        help="downstream bundles: ship this image_encoder.pt (+ sidecar) in models/ for retraining",
    )
    parser.add_argument(
        "--size-limit-mb",
        type=float,
        default=SIZE_LIMIT_MB,
        help="per-file limit; larger files go to large_files.yml (default: %(default)s, the model zoo's)",
    )
    parser.add_argument("--large-file-url", metavar="URL", help="URL prefix where the large files will be uploaded")
    parser.add_argument("--project", metavar="DIR", help="the sista-monai source tree to build the wheel from")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument(
        "--tokenizer",
        metavar="DIR",
        help="bundles/pretrain: the tokenizer folder the text encoder was trained with (default: data/demo/tokenizer)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (0: packaged, 1: a packaging error, printed as one message)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        summary = package_bundle(
            args.bundle_dir,
            args.out,
            layers=args.layer,
            pretrained_encoder=args.pretrained_encoder,
            size_limit_mb=args.size_limit_mb,
            large_file_url=args.large_file_url,
            project=args.project,
            overwrite=args.overwrite,
            tokenizer=args.tokenizer,
        )
    except BundlePackagingError as err:
        print(f"python -m sista_monai.package: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
