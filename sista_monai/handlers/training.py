"""Handlers of the SISTA training loop: loss-term logging, per-epoch seeding, RNG state, atomic checkpoints.

The TensorBoard and MLflow logging of the loss terms use MONAI's own ``TensorBoardStatsHandler`` and
``MLFlowHandler`` with :func:`loss_terms` as their ``output_transform``: they already log every entry of a dict.
The console uses :class:`~sista_monai.handlers.EpochSummaryStatsHandler`, MONAI's ``StatsHandler`` plus one
line per epoch with the epoch means of the same dict.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data.utils import set_rnd
from monai.handlers import CheckpointLoader, TensorBoardStatsHandler
from monai.utils import IgniteInfo, min_version, optional_import

from sista_monai.distributed import is_main_process, rank
from sista_monai.io.files import stale_temporary_files, write_atomically
from sista_monai.io.weights import (
    load_failure_reason,
    load_weights_only,
    move_loss_temperature,
    refuse_nonfinite,
    save_weights,
)

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
    from ignite.handlers import Checkpoint, DiskSaver
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
    Checkpoint, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Checkpoint")
    DiskSaver, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "DiskSaver")

__all__ = [
    "LOSS_TERM_KEYS",
    "loss_terms",
    "EpochSeeder",
    "RandomStates",
    "AtomicCheckpointSaver",
    "load_checkpoint",
    "BestModelSaver",
    "FinalModelFallback",
    "MainRankTensorBoardStatsHandler",
    "WeightsOnlyCheckpointLoader",
]

logger = logging.getLogger(__name__)

LOSS_TERM_KEYS = (
    "loss",
    "loss_sia",
    "loss_sta",
    "loss_sta_within",
    "loss_sta_cross",
    "loss_classification",
    "loss_box_regression",
    "temperature",
    "false_negative_rate",
    "flag_precision",
    "flag_recall",
    "sparsity",
    "lr",
)
"""Scalars of a trainer output that are logged (those present): SISTA's terms, and the detection trainer's."""


def loss_terms(output: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None) -> dict[str, float]:
    """The scalar loss terms and diagnostics of a :class:`~sista_monai.engines.SISTATrainer` output.

    Use as ``output_transform`` of MONAI's ``StatsHandler``, ``TensorBoardStatsHandler`` and ``MLFlowHandler``.
    ``output`` is one dict, or MONAI's decollated list of per-sample dicts (what the trainers give), whose
    batch-level scalars are the same in every dict: the first is read. Only numbers leave the engine this way:
    never report text or patient fields.
    """
    if isinstance(output, Sequence) and not isinstance(output, (str, bytes)):
        output = output[0] if output else None
    if not output:
        return {}
    terms: dict[str, float] = {}
    for key in LOSS_TERM_KEYS:
        value = output.get(key)
        if value is None:
            continue
        if torch.is_tensor(value):
            if value.numel() != 1:
                continue
            value = value.item()
        terms[key] = float(value)
    return terms


class EpochSeeder:
    """Seed every source of randomness of an epoch from ``(seed, epoch)`` at its start.

    The data order (the loader's sampler generator, or ``DistributedSampler.set_epoch``), the random
    transforms (MONAI's ``set_rnd`` on the dataset; workers derive their seeds from the loader's generator)
    and the global torch/NumPy/Python generators (dropout) are reset from ``seed + epoch``. An epoch therefore
    draws the same numbers whether the run went straight through or resumed from a checkpoint — the
    property the resume test checks — and with any number of loader workers. The epoch's data iterator is
    created afresh after seeding (``engine.set_data``), because Ignite may have created it earlier.

    Args:
        seed: the run's seed.
        data_loader: the training loader (its sampler and dataset are seeded).
    """

    def __init__(self, seed: int, data_loader: Any) -> None:
        self.seed = int(seed)
        self.data_loader = data_loader

    def attach(self, engine: Engine) -> None:
        """Run at every ``EPOCH_STARTED``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        epoch_seed = self.seed + int(engine.state.epoch)
        torch.manual_seed(epoch_seed)
        np.random.seed(epoch_seed % 2**32)
        random.seed(epoch_seed)
        loader = self.data_loader
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(int(engine.state.epoch))
        generator = getattr(loader, "generator", None) or getattr(sampler, "generator", None)
        if generator is not None:
            generator.manual_seed(epoch_seed)
        if getattr(loader, "num_workers", 0) == 0 and getattr(loader, "dataset", None) is not None:
            set_rnd(loader.dataset, epoch_seed)
        # Ignite creates the epoch's data iterator whenever the previous one runs out, which on a fresh run or a
        # resumed one can be before this handler; a new iterator drawn now makes the epoch's order and worker
        # seeds depend on (seed, epoch) alone.
        if engine.state.dataloader is loader:
            engine.set_data(loader)


class RandomStates:
    """The global Python, NumPy and torch random states as a checkpointable object.

    ``state_dict`` holds only tensors and plain Python values, so checkpoints load with
    ``torch.load(weights_only=True)``.
    """

    def state_dict(self) -> dict[str, Any]:
        """Capture the current states."""
        np_state = np.random.get_state()
        return {
            "python": torch.tensor(list(random.getstate()[1]), dtype=torch.int64),
            "python_pos": random.getstate()[2],
            "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": int(np_state[2]),
            "numpy_gauss": [int(np_state[3]), float(np_state[4])],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore states captured by :meth:`state_dict`."""
        random.setstate((3, tuple(int(v) for v in state["python"].tolist()), state["python_pos"]))
        has_gauss, gauss = state["numpy_gauss"]
        np.random.set_state(
            (
                "MT19937",
                state["numpy_keys"].numpy().astype(np.uint32),
                int(state["numpy_pos"]),
                int(has_gauss),
                float(gauss),
            )
        )
        torch.set_rng_state(state["torch"])
        if state.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class _AtomicDiskSaver(DiskSaver):
    """Ignite's ``DiskSaver`` writing through :func:`write_atomically`, refusing non-finite states.

    MONAI's ``CheckpointSaver`` turns atomic writing off, and Ignite's own atomic mode neither syncs the file
    before the rename nor names its temporary files recognisably. Here a process killed mid-write leaves the
    previous checkpoints intact and a hidden ``.checkpoint_<n>.pt.<random>.tmp``, which the next saver on the
    same folder removes. A state holding NaN or infinity is refused on every rank
    (:class:`NonFiniteWeightsError`) before anything is written.
    """

    def __init__(self, dirname: str | os.PathLike) -> None:
        super().__init__(dirname=os.fspath(dirname), require_empty=False, atomic=True, create_dir=True)
        if rank() == self.save_on_rank:
            for stale in stale_temporary_files(self.dirname, "*.pt"):
                logger.info("removing %s, a partial checkpoint left by an interrupted run", stale.name)
                stale.unlink(missing_ok=True)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        refuse_nonfinite(checkpoint, Path(self.dirname) / filename)
        super().__call__(checkpoint, filename, metadata)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Any) -> None:
        write_atomically(path, lambda stream: func(checkpoint, stream, **self.kwargs))

    def remove(self, filename: str) -> None:
        """Keep the file: Ignite would delete the oldest checkpoint *before* writing the next one.

        :class:`AtomicCheckpointSaver` rotates the files itself, after the new one is complete.
        """


class AtomicCheckpointSaver:
    """Save a checkpoint atomically every ``save_interval`` epochs (and at the end), keeping ``n_saved``.

    The checkpoint holds the ``save_dict`` entries' ``state_dict()`` (model, optimiser, scheduler, trainer,
    :class:`RandomStates`): everything ``resume_from`` restores. Files are ``<prefix>checkpoint_<epoch>.pt``
    plus ``<prefix>checkpoint_final.pt`` at completion, written only by rank 0.

    Safety: each file is written to a temporary name, synced and renamed (:func:`write_atomically`); the
    oldest of this run's periodic checkpoints is deleted only after the newer one is complete, so a kill at
    any moment leaves at least the previous checkpoint loadable; a state with NaN or infinite values is
    never written (:class:`NonFiniteWeightsError` stops the run and names the tensors).

    Args:
        save_dir: target folder.
        save_dict: ``{name: object with state_dict()}``.
        save_interval: epochs between checkpoints (0: only the final one).
        n_saved: how many periodic checkpoints of this run to keep.
        file_prefix: file name prefix.
        save_final: also write the final checkpoint when training completes.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: dict[str, Any],
        save_interval: int = 1,
        n_saved: int = 2,
        file_prefix: str = "",
        save_final: bool = True,
    ) -> None:
        if int(n_saved) < 1:
            raise ValueError(f"n_saved must be at least 1, got {n_saved}")
        self.save_dir = Path(save_dir)
        self.save_dict = save_dict
        self.save_interval = int(save_interval)
        self.n_saved = int(n_saved)
        self.file_prefix = file_prefix
        self.save_final = save_final
        self._written: list[str] = []

    def attach(self, engine: Engine) -> None:
        """Register on every rank; files are written on rank 0 only.

        Every rank must construct the saver: its first call into ``ignite.distributed`` is a collective.
        """
        saver = _AtomicDiskSaver(self.save_dir)
        if self.save_interval > 0:
            periodic = Checkpoint(
                self.save_dict,
                saver,
                filename_prefix=self.file_prefix,
                n_saved=None,
                global_step_transform=lambda e, _: e.state.epoch,
                filename_pattern="{filename_prefix}checkpoint_{global_step}.{ext}",
            )
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self._save_and_rotate, periodic)
        if self.save_final:
            final = Checkpoint(
                self.save_dict,
                saver,
                filename_prefix=self.file_prefix,
                n_saved=None,
                filename_pattern="{filename_prefix}checkpoint_final.{ext}",
            )
            engine.add_event_handler(Events.COMPLETED, final)

    def _save_and_rotate(self, engine: Engine, periodic: Checkpoint) -> None:
        periodic(engine)
        name = periodic.last_checkpoint
        if name is None:
            return
        name = Path(name).name
        if name in self._written:
            self._written.remove(name)
        self._written.append(name)
        while len(self._written) > self.n_saved:
            oldest = self.save_dir / self._written.pop(0)
            if is_main_process():
                oldest.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike, load_dict: Mapping[str, Any], map_location: Any = "cpu") -> None:
    """Restore every object of ``load_dict`` from a checkpoint written by :class:`AtomicCheckpointSaver`.

    Loaded with ``torch.load(weights_only=True)``: a checkpoint carrying arbitrary pickled objects is refused. A
    checkpoint written when the SIA loss held the learnable temperature (``"loss": {"log_temperature": ...}``) still
    loads: the temperature is moved into the network (:func:`~sista_monai.io.move_loss_temperature`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a loadable weights-only checkpoint, or lacks an entry of ``load_dict``.
    """
    path = Path(path)
    checkpoint = move_loss_temperature(load_weights_only(path, map_location, what="checkpoint"))
    missing = [k for k in load_dict if k not in checkpoint]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {missing} (has {sorted(checkpoint)})")
    Checkpoint.load_objects(to_load=dict(load_dict), checkpoint=checkpoint)
    logger.info("resumed from %s", path)


class BestModelSaver:
    """Save the network's state dict atomically whenever the evaluator's key metric improves (rank 0 only).

    MONAI's ``CheckpointSaver(save_key_metric=True)`` does the same but writes non-atomically; a model file that
    downstream bundles load must never be left truncated. Weights holding NaN or infinity are never written:
    :class:`NonFiniteWeightsError` (logged) stops the run and the previous best file stays.

    Args:
        network: the model (a DDP wrapper is unwrapped).
        save_path: the file, e.g. ``models/model_best.pt``.
        metric_name: the metric to follow (default: the evaluator's key metric).
        mode: ``"max"`` or ``"min"``.
    """

    def __init__(
        self, network: torch.nn.Module, save_path: str | os.PathLike, metric_name: str | None = None, mode: str = "max"
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.network = network
        self.save_path = Path(save_path)
        self.metric_name = metric_name
        self.mode = mode
        self.best: float | None = None

    def attach(self, engine: Engine) -> None:
        """Register on rank 0 only, after each evaluation epoch."""
        if not is_main_process():
            return
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        name = self.metric_name or engine.state.key_metric_name
        value = float(engine.state.metrics[name])
        improved = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if not improved or value != value:  # NaN never counts as an improvement
            return
        save_weights(self.network, self.save_path, engine.logger)
        self.best = value
        logger.info("best %s = %.4f: saved %s", name, value, self.save_path)


class WeightsOnlyCheckpointLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` whose failures name the checkpoint file and the reason.

    MONAI 1.6 already loads with ``torch.load(weights_only=True)``, so a checkpoint carrying arbitrary pickled
    objects is refused, but with PyTorch's message alone, which does not say which file. This drop-in
    replacement (same arguments) re-raises such failures as :class:`ValueError` naming ``load_path``.
    """

    def __call__(self, engine: Engine) -> None:
        path = Path(self.load_path)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        try:
            super().__call__(engine)
        except (pickle.UnpicklingError, EOFError, OSError) as err:
            raise ValueError(f"{path}: {load_failure_reason(err)}") from err
        except RuntimeError as err:
            if "state_dict" in str(err):
                raise ValueError(
                    f"{path}: the weights do not fit the network ({str(err).splitlines()[0][:300]})"
                ) from err
            raise ValueError(f"{path}: {load_failure_reason(err)}") from err


class _NullSummaryWriter:
    """A SummaryWriter stand-in that writes nothing (non-zero ranks)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class MainRankTensorBoardStatsHandler(TensorBoardStatsHandler):
    """MONAI's ``TensorBoardStatsHandler`` that opens an event file on rank 0 only.

    The stock handler creates its ``SummaryWriter`` when it is constructed, so under ``torchrun`` every rank
    would leave an (empty) event file in the log folder even when only rank 0 attaches it. Arguments are
    ``TensorBoardStatsHandler``'s.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.main_rank = is_main_process()
        if not self.main_rank:
            kwargs["summary_writer"] = _NullSummaryWriter()
        super().__init__(*args, **kwargs)

    def attach(self, engine: Engine) -> None:
        """Attach on rank 0 only."""
        if self.main_rank:
            super().attach(engine)


class FinalModelFallback:
    """Save the final weights when training ends without any validation having saved a best model.

    :class:`~sista_monai.handlers.BestModelSaver` saves only when the key metric is finite and improves; on a
    validation split with a single class the AUROC is undefined throughout, and the bundle would end without
    ``models/model.pt`` (or with a stale one from an earlier run). Attached to the trainer, this handler writes
    the final weights to the same file in that case, with a warning; weights holding NaN or infinity are refused
    (:class:`~sista_monai.errors.NonFiniteWeightsError`), as by the other savers. Rank 0 only.

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
        if not is_main_process():
            return
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if self.best_model_saver.best is not None:
            return
        save_weights(self.network, self.save_path, engine.logger)
        engine.logger.warning(
            "no validation gave a finite key metric (single-class validation split?): saved the final weights to %s",
            self.save_path,
        )
