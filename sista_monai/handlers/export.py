"""Export of the pretrained image encoder for the downstream bundles.

``models/image_encoder.pt`` is a plain state dict of the image encoder (loadable with
``torch.load(weights_only=True)``); ``models/image_encoder.json`` beside it says how to rebuild and feed it:
the architecture (``encoder.config()``), the input size, the intensity normalisation, the embedding width,
the SHA-256 of the weights file and the package version. Both files are written atomically.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from sista_monai.atomic_files import write_atomically
from sista_monai.handlers.training import refuse_nonfinite

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["SIDECAR_FORMAT", "atomic_write_bytes", "export_image_encoder", "ImageEncoderExporter"]

SIDECAR_FORMAT = "sista-image-encoder/1"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a synced temporary file in the same folder and an atomic rename."""
    return write_atomically(path, lambda stream: stream.write(data))


def _package_version() -> str:
    try:
        return version("sista-monai")
    except PackageNotFoundError:
        return "unknown"


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
    encoder = getattr(network, "image_encoder", network)
    state = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    output_dir = Path(output_dir)
    refuse_nonfinite(state, output_dir / f"{name}.pt")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    weights = atomic_write_bytes(output_dir / f"{name}.pt", data)
    config = encoder.config()
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
        "sha256": hashlib.sha256(data).hexdigest(),
        "sista_monai_version": _package_version(),
        **(extra or {}),
    }
    meta = atomic_write_bytes(
        output_dir / f"{name}.json", (json.dumps(sidecar, indent=2, sort_keys=True) + "\n").encode()
    )
    return weights, meta


class ImageEncoderExporter:
    """Export the image encoder when training completes (rank 0 only); see :func:`export_image_encoder`.

    Args:
        model: the SISTA model (or DDP wrapper).
        output_dir: the bundle's ``models/`` folder.
        normalization: intensity normalisation recorded in the sidecar.
        extra: further sidecar entries.
        event: ``"completed"`` (default) or ``"epoch_completed"``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        output_dir: str | os.PathLike,
        normalization: dict[str, float] | None = None,
        extra: dict[str, Any] | None = None,
        event: str = "completed",
    ) -> None:
        self.model = model
        self.output_dir = output_dir
        self.normalization = normalization
        self.extra = extra
        self.event = Events.COMPLETED if event == "completed" else Events.EPOCH_COMPLETED

    def attach(self, engine: Engine) -> None:
        """Register on rank 0 only."""
        if (
            torch.distributed.is_available()
            and torch.distributed.is_initialized()
            and torch.distributed.get_rank() != 0
        ):
            return
        engine.add_event_handler(self.event, self)

    def __call__(self, engine: Engine) -> None:
        weights, _ = export_image_encoder(self.model, self.output_dir, self.normalization, self.extra)
        engine.logger.info("image encoder exported to %s", weights)
