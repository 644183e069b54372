"""The exported image encoder: ``image_encoder.pt`` and its JSON sidecar, written and read in one place.

``models/image_encoder.pt`` is a plain state dict of the image encoder (loadable with
``torch.load(weights_only=True)``); ``models/image_encoder.json`` beside it says how to rebuild and feed it:
the architecture (``encoder.config()``), the input size, the intensity normalisation, the embedding width,
the SHA-256 of the weights file and the package version. Both files are written atomically.

A downstream bundle names the weights file in ONE config key, ``pretrained_encoder``; ``null`` keeps the
configured encoder's random initialisation (the baseline every table needs). Before any weight is loaded, the
sidecar is checked against what the downstream bundle configured and the file is refused, with a message that
lists every difference, when

* its architecture (``encoder.config()``) or its input size differs from the configured encoder,
* the weights file's SHA-256 differs from the one the sidecar recorded (a damaged or replaced file), or
* the intensity normalisation or the resize/pad/crop sizes the encoder was pretrained with differ from the
  downstream preprocessing (when the bundle passes its own values as ``expected_preprocessing``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sista_monai.errors import EncoderMismatchError

from .files import atomic_write_bytes, json_text, sha256_bytes, sha256_file
from .weights import refuse_nonfinite, state_bytes

__all__ = [
    "SIDECAR_FORMAT",
    "EncoderMismatchError",
    "export_image_encoder",
    "sidecar_path",
    "read_encoder_sidecar",
    "encoder_differences",
    "load_pretrained_encoder",
    "encoder_source",
]

logger = logging.getLogger(__name__)


SIDECAR_FORMAT = "sista-image-encoder/1"


def _package_version() -> str:
    try:
        return version("sista-monai")
    except PackageNotFoundError:
        return "unknown"


def _config(encoder: nn.Module) -> dict[str, Any]:
    """The encoder's ``config()``: the arguments that rebuild it (every image encoder of the project has one)."""
    config: Any = encoder.config
    return dict(config())


def export_image_encoder(
    model: torch.nn.Module,
    output_dir: str | os.PathLike,
    normalization: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
    name: str = "image_encoder",
) -> tuple[Path, Path]:
    """Write ``<name>.pt`` (the image encoder's state dict) and ``<name>.json`` (its sidecar).

    Args:
        model: a :class:`~sista_monai.networks.SISTAModel` (or its DDP wrapper), or an image encoder itself.
        output_dir: the bundle's ``models/`` folder.
        normalization: ``{"mean": ..., "std": ...}`` applied to ``[0, 1]`` images before the encoder.
        extra: further sidecar entries (e.g. the preprocessing sizes).
        name: file stem.

    Returns:
        The weights and sidecar paths.

    Raises:
        NonFiniteWeightsError: the encoder holds NaN or infinite values (nothing is written).
    """
    network = getattr(model, "module", model)
    encoder: nn.Module = getattr(network, "image_encoder", network)
    state = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    output_dir = Path(output_dir)
    refuse_nonfinite(state, output_dir / f"{name}.pt")
    data = state_bytes(state)
    weights = atomic_write_bytes(output_dir / f"{name}.pt", data)
    config = _config(encoder)
    sidecar = {
        "format": SIDECAR_FORMAT,
        "architecture": config,
        "input_size": config.get("img_size"),
        "in_channels": config.get("in_channels", 1),
        "out_channels": int(getattr(encoder, "out_channels", 0)),
        "patch_grid": list(getattr(encoder, "patch_grid", ())),
        "normalization": normalization or {"mean": 0.5, "std": 0.25},
        "intensity_range": "display-normalised [0, 1], higher = brighter (sista_monai.transforms.LoadChestXray)",
        "layout": "channel-first (C, W, H), MONAI's (x = column, y = row)",
        "sha256": sha256_bytes(data),
        "sista_monai_version": _package_version(),
        **(extra or {}),
    }
    meta = atomic_write_bytes(output_dir / f"{name}.json", json_text(sidecar).encode())
    return weights, meta


def sidecar_path(weights: str | os.PathLike) -> Path:
    """``models/image_encoder.pt`` → ``models/image_encoder.json`` (the sidecar lies beside the weights)."""
    return Path(weights).with_suffix(".json")


def read_encoder_sidecar(weights: str | os.PathLike) -> dict[str, Any]:
    """Read and sanity-check the JSON sidecar of an exported encoder.

    Args:
        weights: the ``image_encoder.pt`` file; its sidecar is the ``.json`` beside it.

    Raises:
        FileNotFoundError: the weights or the sidecar are missing (the message says how to produce them).
        EncoderMismatchError: the sidecar is not valid JSON, has another format, or lacks a required entry.
    """
    weights = Path(weights)
    hint = (
        "train the pretraining bundle first (python -m monai.bundle run --config_file "
        "bundles/pretrain/configs/train.json), point --pretrained_encoder at its models/image_encoder.pt, or "
        "use --pretrained_encoder null for random initialisation"
    )
    if not weights.is_file():
        raise FileNotFoundError(f"pretrained_encoder: no encoder weights at {weights}; {hint}")
    meta_path = sidecar_path(weights)
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"pretrained_encoder: {weights} has no sidecar {meta_path.name} beside it (architecture, input size, "
            f"normalisation); export encoders with sista_monai.io.export_image_encoder"
        )
    try:
        sidecar = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EncoderMismatchError(f"{meta_path}: not a JSON sidecar ({err})") from err
    if not isinstance(sidecar, dict) or sidecar.get("format") != SIDECAR_FORMAT:
        found = sidecar.get("format") if isinstance(sidecar, dict) else type(sidecar).__name__
        raise EncoderMismatchError(f"{meta_path}: sidecar format {found!r}, expected {SIDECAR_FORMAT!r}")
    missing = [k for k in ("architecture", "input_size", "sha256") if k not in sidecar]
    if missing:
        raise EncoderMismatchError(f"{meta_path}: sidecar lacks {missing}")
    return sidecar


def _plain(value: Any) -> Any:
    """Tuples → lists and ints → floats where mixed, so JSON values compare with Python ones."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return value


def _pair(value: Any) -> list[float]:
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return [float(value), float(value)]


def encoder_differences(
    encoder: nn.Module,
    sidecar: Mapping[str, Any],
    expected_preprocessing: Mapping[str, Any] | None = None,
) -> list[str]:
    """Every way an exported encoder (its sidecar) differs from the configured encoder and preprocessing.

    Args:
        encoder: the configured encoder (anything with ``config()``).
        sidecar: the exported encoder's sidecar (see :func:`read_encoder_sidecar`).
        expected_preprocessing: the downstream bundle's ``{"normalization": {"mean", "std"}, "preprocessing":
            {"resize_longest", "pad_square", "crop"}}``; ``None`` skips these checks. Entries the sidecar does
            not record are skipped with a warning.

    Returns:
        One human-readable line per difference; empty when the file fits.
    """
    configured = _plain(_config(encoder))
    exported = _plain(sidecar.get("architecture", {}))
    differences = []
    configured_size, exported_size = _pair(configured.get("img_size", [])), _pair(sidecar.get("input_size", []))
    if configured_size != exported_size:
        differences.append(
            f"input size: the file was trained at {[int(v) for v in exported_size]}, the bundle configures "
            f"{[int(v) for v in configured_size]}"
        )
    for key in sorted(set(configured) | set(exported)):
        if key == "img_size":
            continue
        if configured.get(key, "<absent>") != exported.get(key, "<absent>"):
            differences.append(
                f"architecture {key}: file {sidecar['architecture'].get(key, '<absent>')!r}, "
                f"configured {_config(encoder).get(key, '<absent>')!r}"
            )
    for group in ("normalization", "preprocessing"):
        wanted = (expected_preprocessing or {}).get(group)
        if not wanted:
            continue
        recorded = sidecar.get(group)
        if not isinstance(recorded, Mapping):
            logger.warning("the encoder sidecar records no %s; the bundle's values are used unchecked", group)
            continue
        for key, value in wanted.items():
            if key not in recorded:
                logger.warning("the encoder sidecar records no %s %s; the bundle's value is used unchecked", group, key)
            elif _plain(recorded[key]) != _plain(value):
                differences.append(
                    f"{group} {key}: the encoder was pretrained with {recorded[key]!r}, the bundle uses {value!r}"
                )
    return differences


def load_pretrained_encoder(
    encoder: nn.Module,
    pretrained_encoder: str | os.PathLike | None,
    expected_preprocessing: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Load exported weights into the configured encoder, refusing a file that does not fit.

    Args:
        encoder: the configured encoder (e.g. the bundle's ``image_encoder`` component).
        pretrained_encoder: path of ``image_encoder.pt`` (sidecar beside it), or ``None`` to keep the random
            initialisation.
        expected_preprocessing: see :func:`encoder_differences`.

    Returns:
        ``encoder``, with the pretrained weights when a file was given.

    Raises:
        FileNotFoundError: the weights or sidecar are missing.
        EncoderMismatchError: architecture, input size, normalisation or preprocessing differ (all listed), the
            SHA-256 does not match the sidecar, or the state dict does not fit the encoder.
    """
    if pretrained_encoder is None or str(pretrained_encoder).lower() in ("", "none", "null"):
        logger.info("pretrained_encoder is null: the image encoder keeps its random initialisation")
        return encoder
    weights = Path(pretrained_encoder)
    sidecar = read_encoder_sidecar(weights)
    differences = encoder_differences(encoder, sidecar, expected_preprocessing)
    if differences:
        raise EncoderMismatchError(
            f"pretrained_encoder {weights} does not match this bundle's configuration:\n  - "
            + "\n  - ".join(differences)
            + "\nconfigure the same encoder and preprocessing as the pretraining run, or use another file"
        )
    digest = sha256_file(weights)
    if digest != sidecar["sha256"]:
        raise EncoderMismatchError(
            f"pretrained_encoder {weights}: SHA-256 {digest} differs from {sidecar['sha256']} recorded in "
            f"{sidecar_path(weights).name} (damaged or replaced file); refusing to load it"
        )
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle refusals and corrupt archives both mean "not loadable"
        raise EncoderMismatchError(
            f"{weights}: not a loadable weights-only state dict ({type(err).__name__}: {err})"
        ) from err
    result = encoder.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise EncoderMismatchError(
            f"{weights}: the weights do not fit the configured encoder; missing {list(result.missing_keys)[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]}"
        )
    logger.info("loaded the pretrained image encoder %s (sha256 %s)", weights, digest[:12])
    return encoder


def encoder_source(pretrained_encoder: str | os.PathLike | None) -> dict[str, Any]:
    """Where the encoder weights came from, for ``eval/metrics.json``: the file and its recorded SHA-256."""
    if pretrained_encoder is None or str(pretrained_encoder).lower() in ("", "none", "null"):
        return {"pretrained_encoder": None, "initialisation": "random"}
    weights = Path(pretrained_encoder)
    sha = None
    if sidecar_path(weights).is_file():
        try:
            sha = json.loads(sidecar_path(weights).read_text()).get("sha256")
        except (json.JSONDecodeError, UnicodeDecodeError):
            sha = None
    return {"pretrained_encoder": str(weights), "initialisation": "pretrained", "sha256": sha}
