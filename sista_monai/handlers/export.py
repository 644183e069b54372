"""Export of the pretrained image encoder when training completes (the file format: :mod:`sista_monai.io.encoder`)."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from sista_monai.distributed import is_main_process
from sista_monai.io.encoder import export_image_encoder

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["ImageEncoderExporter"]

logger = logging.getLogger(__name__)


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
        if not is_main_process():
            return
        engine.add_event_handler(self.event, self)

    def __call__(self, engine: Engine) -> None:
        weights, _ = export_image_encoder(self.model, self.output_dir, self.normalization, self.extra)
        logger.info("image encoder exported to %s", weights)
