"""Artefact input/output: every file the project writes or reads back goes through here.

* :mod:`.files`: atomic writes (temporary file, sync, rename), the project's JSON layout, SHA-256 checksums;
* :mod:`.weights`: non-finite states refused, weights saved atomically, ``torch.load(weights_only=True)`` with
  errors that name the file;
* :mod:`.encoder`: the exported image encoder (``image_encoder.pt`` + its JSON sidecar), written by pretraining
  and loaded, with every mismatch refused, by the downstream bundles.
* :mod:`.predictions`: what a per-image prediction file of the downstream bundles' inference holds (classification,
  detection), for the bundles' writers and the MONAI Deploy result operators alike.

The torch-dependent names are imported on first use, so reading and writing JSON does not load torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .files import (
    TEMPORARY_SUFFIX,
    atomic_write_bytes,
    json_text,
    sha256_bytes,
    sha256_file,
    stale_temporary_files,
    write_atomically,
    write_json,
)

_LAZY = {
    **dict.fromkeys(
        (
            "SIDECAR_FORMAT",
            "encoder_differences",
            "encoder_source",
            "export_image_encoder",
            "load_pretrained_encoder",
            "read_encoder_sidecar",
            "sidecar_path",
        ),
        "encoder",
    ),
    **dict.fromkeys(
        (
            "load_failure_reason",
            "load_network_weights",
            "load_weights_only",
            "move_loss_temperature",
            "nonfinite_entries",
            "quiet_transformers",
            "refuse_nonfinite",
            "save_weights",
            "state_bytes",
        ),
        "weights",
    ),
    **dict.fromkeys(("classification_record", "detection_record", "image_size"), "predictions"),
}
"""Names of the torch-dependent modules, imported on first use so that ``sista_monai.io.files`` stays light."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SIDECAR_FORMAT",
    "TEMPORARY_SUFFIX",
    "atomic_write_bytes",
    "classification_record",
    "detection_record",
    "encoder_differences",
    "encoder_source",
    "export_image_encoder",
    "image_size",
    "json_text",
    "load_failure_reason",
    "load_network_weights",
    "move_loss_temperature",
    "load_pretrained_encoder",
    "load_weights_only",
    "nonfinite_entries",
    "quiet_transformers",
    "read_encoder_sidecar",
    "refuse_nonfinite",
    "save_weights",
    "sha256_bytes",
    "sha256_file",
    "sidecar_path",
    "stale_temporary_files",
    "state_bytes",
    "write_atomically",
    "write_json",
]
