"""Loading the pretrained image encoder into a downstream bundle, and the choices made around it.

The pretraining bundle exports ``models/image_encoder.pt`` (a state dict) with ``models/image_encoder.json``
beside it (see :mod:`sista_monai.handlers.export`). A downstream bundle names the weights file in ONE config
key, ``pretrained_encoder``; ``null`` keeps the configured encoder's random initialisation (the baseline every
table needs). Before any weight is loaded, the sidecar is checked against what the downstream bundle
configured and the file is refused, with a message that lists every difference, when

* its architecture (``encoder.config()``) or its input size differs from the configured encoder,
* the weights file's SHA-256 differs from the one the sidecar recorded (a damaged or replaced file), or
* the intensity normalisation or the resize/pad/crop sizes the encoder was pretrained with differ from the
  downstream preprocessing (when the bundle passes its own values as ``expected_preprocessing``).

The other shared choices of the downstream bundles live here too: the label fraction (``1 | 10 | 100`` → the
datalist key of the released nested subset) and the optimiser parameter groups of a linear probe or of
fine-tuning with its own encoder learning rate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sista_monai.handlers.export import SIDECAR_FORMAT

__all__ = [
    "LABEL_FRACTION_KEYS",
    "EncoderMismatchError",
    "sidecar_path",
    "read_encoder_sidecar",
    "encoder_differences",
    "load_pretrained_encoder",
    "encoder_source",
    "label_fraction_key",
    "encoder_parameter_groups",
    "positive_class_weight",
]

logger = logging.getLogger(__name__)

LABEL_FRACTION_KEYS: dict[int, str] = {1: "training_1", 10: "training_10", 100: "training"}
"""``label_fraction`` (percent of the training split) → datalist key of the released nested subset."""


class EncoderMismatchError(ValueError):
    """A pretrained encoder file that does not fit the configured downstream network or preprocessing."""


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
            f"normalisation); export encoders with sista_monai.handlers.export_image_encoder"
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
    configured = _plain(encoder.config())
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
                f"configured {encoder.config().get(key, '<absent>')!r}"
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    digest = _sha256(weights)
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


def label_fraction_key(label_fraction: int | float | str) -> str:
    """``1 | 10 | 100`` (percent of the training split) → ``training_1 | training_10 | training``.

    The 1 % and 10 % subsets are the released nested ones written by ``prepare`` and the demo generator
    (1 % ⊂ 10 % ⊂ 100 %), so every run at a fraction sees the same labelled images.

    Raises:
        ValueError: any other fraction.
    """
    try:
        value = float(label_fraction)
    except (TypeError, ValueError):
        value = float("nan")
    for fraction, key in LABEL_FRACTION_KEYS.items():
        if value == fraction:
            return key
    raise ValueError(f"label_fraction must be one of {sorted(LABEL_FRACTION_KEYS)} (percent), got {label_fraction!r}")


def encoder_parameter_groups(
    network: nn.Module,
    learning_rate: float,
    encoder_learning_rate: float | None = None,
    weight_decay: float = 0.0,
) -> list[dict[str, Any]]:
    """Optimiser parameter groups: the head at ``learning_rate``, the encoder at its own rate when trained.

    Args:
        network: a downstream network with an ``encoder`` submodule (a DDP wrapper is unwrapped).
        learning_rate: learning rate of everything outside the encoder (the head, a decoder).
        encoder_learning_rate: learning rate of the encoder when fine-tuning (``None``: ``learning_rate``).
            Frozen encoder parameters (linear probe) are left out of the optimiser.
        weight_decay: weight decay of both groups.

    Returns:
        A list of ``{"params", "lr", "weight_decay", "name"}`` dicts for any ``torch.optim`` optimiser.

    Raises:
        ValueError: the network has no ``encoder`` or nothing to train.
    """
    module = getattr(network, "module", network)
    encoder = getattr(module, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise ValueError(f"{type(module).__name__} has no 'encoder' submodule")
    encoder_ids = {id(p) for p in encoder.parameters()}
    head = [p for p in module.parameters() if id(p) not in encoder_ids and p.requires_grad]
    trained_encoder = [p for p in encoder.parameters() if p.requires_grad]
    groups = []
    if head:
        groups.append({"params": head, "lr": float(learning_rate), "weight_decay": float(weight_decay), "name": "head"})
    if trained_encoder:
        lr = float(learning_rate if encoder_learning_rate is None else encoder_learning_rate)
        groups.append({"params": trained_encoder, "lr": lr, "weight_decay": float(weight_decay), "name": "encoder"})
    if not groups:
        raise ValueError("no trainable parameters")
    return groups


def positive_class_weight(items: Sequence[Mapping[str, Any]], label_key: str = "label") -> torch.Tensor:
    """``pos_weight`` of ``BCEWithLogitsLoss`` that balances the classes of a training list: ``[#neg / #pos]``.

    Raises:
        ValueError: the list lacks one of the two classes.
    """
    labels = [float(item[label_key]) for item in items]
    positives = sum(1 for v in labels if v >= 0.5)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        raise ValueError(
            f"the training list has {positives} positive and {negatives} negative items: both classes are needed"
        )
    return torch.tensor([negatives / positives], dtype=torch.float32)
