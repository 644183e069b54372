"""The packaged bundle's configs: read with one-line errors, rewritten to stand alone, ``--layer`` files merged.

Every config is rewritten for the packaged folder (``bundle_root`` → ``"."``, a downstream ``pretrained_encoder``
→ the packaged ``models/image_encoder.pt``); the pretraining bundle's ``inference.json`` is its committed
``configs/image_inference.json`` (:func:`_pretraining_inference`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sista_monai.errors import BundlePackagingError
from sista_monai.io.files import json_text

__all__ = ["IMAGE_INFERENCE", "PRETRAINED_ENCODER"]

logger = logging.getLogger(__name__)

PRETRAINED_ENCODER = "$@bundle_root + '/models/image_encoder.pt'"


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
