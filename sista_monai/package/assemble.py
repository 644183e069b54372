"""The packaged folder assembled: :func:`package_bundle` writes every part into a staging folder beside ``out``,
checks the model-zoo rules and moves it into place (see :mod:`sista_monai.package` for what it writes)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sista_monai.io.files import StagedFolder, sha256_file
from sista_monai.package.configs import (
    IMAGE_INFERENCE,
    _fail,
    _is_pretraining,
    _merge_layers,
    _pretraining_inference,
    _read_json,
    _rewrite_config,
    _write_json,
)
from sista_monai.package.docs import _readme_section, data_license_text
from sista_monai.package.metadata import _metadata, _pretraining_metadata
from sista_monai.package.model import (
    _check_model_fits,
    _export_torchscript,
    _verify_net_in_out,
    _write_pretraining_model,
)
from sista_monai.package.rules import SIZE_LIMIT_MB, _mib, _write_large_files, check_bundle_folder
from sista_monai.package.text_side import (
    DEMO_TOKENIZER,
    TEXT_CONFIGS,
    _check_text_model_fits,
    _text_config,
    _write_pretraining_text_model,
)
from sista_monai.package.wheel import _build_wheel, _project_root

__all__ = ["package_bundle"]


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
    inferer = ""
    with StagedFolder(out) as work:  # moved into place whole, only once it passes the checks
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
        large = _write_large_files(work, size_limit_mb, large_file_url)
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
    return summary
