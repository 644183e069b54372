"""Training-loop pieces shared by the downstream bundles."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from sista_monai.handlers import BestModelSaver, atomic_write_bytes
from sista_monai.handlers.training import refuse_nonfinite

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["FinalModelFallback"]

logger = logging.getLogger(__name__)


class FinalModelFallback:
    """Save the final weights when training ends without any validation having saved a best model.

    :class:`~sista_monai.handlers.BestModelSaver` saves only when the key metric is finite and improves; on a
    validation split with a single class the AUROC is undefined throughout, and the bundle would end without
    ``models/model.pt`` (or with a stale one from an earlier run). Attached to the trainer, this handler writes
    the final weights to the same file in that case, with a warning; weights holding NaN or infinity are refused
    (:class:`~sista_monai.handlers.NonFiniteWeightsError`), as by the other savers. Rank 0 only.

    Args:
        best_model_saver: the validation evaluator's best-model saver.
        network: the trained network (a DDP wrapper is unwrapped).
        save_path: where the best-model saver writes, e.g. ``models/model.pt``.
    """

    def __init__(
        self, best_model_saver: BestModelSaver, network: torch.nn.Module, save_path: str | os.PathLike
    ) -> None:
        self.best_model_saver = best_model_saver
        self.network = network
        self.save_path = Path(save_path)

    def attach(self, engine: Engine) -> None:
        """Register at training completion on rank 0."""
        if (
            torch.distributed.is_available()
            and torch.distributed.is_initialized()
            and torch.distributed.get_rank() != 0
        ):
            return
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if self.best_model_saver.best is not None:
            return
        network = getattr(self.network, "module", self.network)
        state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
        refuse_nonfinite(state, self.save_path, engine.logger)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.save_path, buffer.getvalue())
        engine.logger.warning(
            "no validation gave a finite key metric (single-class validation split?): saved the final weights to %s",
            self.save_path,
        )
