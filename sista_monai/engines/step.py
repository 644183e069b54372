"""One safe optimiser step for every trainer of the project (SISTA, classification, segmentation, detection).

MONAI's :class:`~monai.engines.SupervisedTrainer` steps the optimiser whatever the loss is; a NaN there ends in
NaN weights, and under ``torchrun`` a rank that stops alone leaves the others waiting in DDP's gradient
all-reduce forever. :class:`SafeStep` is the part of an iteration that comes after the loss, shared by
:class:`~sista_monai.engines.SISTATrainer`, :class:`SafeSupervisedTrainer` and
:class:`~sista_monai.engines.DetectionTrainer`:

1. the ranks agree whether the loss is finite everywhere (one scalar ``all_reduce(MIN)`` per iteration; no
   collective without an initialised process group or with one process);
2. a non-finite loss raises :class:`~sista_monai.errors.NonFiniteLossError` on every rank before anything is
   stepped or saved (``nonfinite_loss="raise"``, the default), naming the iteration and every loss term; or,
   with ``"skip"``, logs the same message, skips the batch's ``backward`` on every rank and counts it in
   ``engine.state.skipped_iterations``;
3. otherwise ``backward`` (through MONAI's gradient scaler for float16 autocast on CUDA), and at the end of an
   accumulation window: gradient clipping (``grad_clip_norm``, after unscaling), the optimiser step, the
   learning-rate scheduler step (so warm-up and cosine schedules count optimiser steps: once per window, never
   per micro-batch).

Gradient accumulation follows ``SupervisedTrainer``'s ``accumulation_steps`` rule: each micro-batch adds the
gradient of ``loss / accumulation_steps``, so a window of equal micro-batches steps with the gradient of the mean
loss over their concatenation. ``amp=True`` runs the forward pass under ``torch.autocast`` on the engine's device
type (CPU included) with ``amp_kwargs`` (``dtype`` defaults to bfloat16 where the trainer says so).

A skipped micro-batch inside an accumulation window drops only its own contribution: its ``backward`` never ran,
so the gradients the window's other micro-batches accumulated are kept, and the window still ends in an
optimiser step. Before that step the gradients are multiplied by ``micro-batches / finite micro-batches`` of the
window, so the step is the one the window would have taken without the bad micro-batch (the mean over its finite
micro-batches, as if the data loader had left it out; a short last window keeps ``SupervisedTrainer``'s
``len / accumulation_steps`` share) rather than a silently shortened one. A window whose micro-batches were all
skipped takes no optimiser step and no scheduler step, and says so in the log. Every rank skips the same
micro-batches (step 1), so the factor is the same on every rank.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys

from sista_monai.distributed import world_info
from sista_monai.errors import NonFiniteLossError

__all__ = ["NONFINITE_LOSS_ACTIONS", "SafeStep", "SafeSupervisedTrainer", "decollated_scalars", "finite_on_every_rank"]

logger = logging.getLogger(__name__)

NONFINITE_LOSS_ACTIONS = ("raise", "skip")
"""What a trainer does with a non-finite loss (``nonfinite_loss``)."""


def finite_on_every_rank(locally_finite: bool, device: torch.device | str) -> bool:
    """Whether the loss is finite on all ranks, so that every rank raises or skips the same step.

    Under DDP a rank that skipped ``backward`` while the others ran it would leave their gradient all-reduce
    waiting forever; one scalar all-reduce per step keeps the ranks in agreement.
    """
    if world_info()[1] == 1:
        return locally_finite
    flag = torch.tensor([1.0 if locally_finite else 0.0], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item() > 0)


def decollated_scalars(values: Mapping[str, Any], batch_size: int) -> list[dict[str, Any]]:
    """A batch's scalar outputs in MONAI's decollated form: ``batch_size`` dicts, each holding every scalar.

    MONAI's trainers decollate ``engine.state.output`` into one dict per sample, replicating a batch-level scalar
    such as the loss into every dict as a Python number (``decollate_batch(..., detach=True)`` calls ``.item()``).
    MONAI's handlers and bundle settings read that form: ``--tracking mlflow`` logs ``from_engine(["loss"],
    first=True)``, which on a plain dict returns a 1-tuple MLflow cannot log. The SISTA and detection trainers
    compute only batch-level values (the loss terms and diagnostics), for which ``decollate_batch`` would find no
    batch dimension, so they give this form directly: one-element tensors (as ``.item()``) and Python numbers are
    kept, anything else is left out. The dicts are distinct objects with the same values.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    scalars = {
        k: v.detach().item() if torch.is_tensor(v) else v
        for k, v in values.items()
        if (torch.is_tensor(v) and v.numel() == 1) or isinstance(v, (bool, int, float))
    }
    return [dict(scalars) for _ in range(batch_size)]


def _scalars(terms: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in terms.items() if torch.is_tensor(v) and v.numel() == 1}


class SafeStep:
    """The optimiser step of a MONAI ``SupervisedTrainer`` subclass: accumulation, autocast, scaler, clipping,
    non-finite loss raise-or-skip with all ranks agreeing, scheduler (see the module docstring).

    Call :meth:`_init_safe_step` at the end of the trainer's ``__init__``; in ``_iteration`` use
    :meth:`_accumulation` and :meth:`_autocast` around the forward pass and :meth:`_optimise` with the loss.
    """

    scheduler: Any
    grad_clip_norm: float | None
    nonfinite_loss: str
    _window_finite: int
    _window_skipped: int

    def _init_safe_step(
        self,
        engine: SupervisedTrainer,
        scheduler: Any = None,
        grad_clip_norm: float | None = None,
        nonfinite_loss: str = "raise",
    ) -> None:
        if nonfinite_loss not in NONFINITE_LOSS_ACTIONS:
            raise ValueError(f"nonfinite_loss must be one of {NONFINITE_LOSS_ACTIONS}, got {nonfinite_loss!r}")
        if grad_clip_norm is not None and float(grad_clip_norm) <= 0:
            raise ValueError(f"grad_clip_norm must be positive or null, got {grad_clip_norm!r}")
        self.scheduler = scheduler
        self.grad_clip_norm = None if grad_clip_norm is None else float(grad_clip_norm)
        self.nonfinite_loss = nonfinite_loss
        self._window_finite = self._window_skipped = 0
        engine.state.skipped_iterations = 0

    @staticmethod
    def _accumulation(engine: SupervisedTrainer) -> tuple[bool, bool]:
        """(zero the gradients now, step the optimiser now), as ``SupervisedTrainer`` decides them."""
        acc = engine.accumulation_steps
        if acc == 1:
            return True, True
        epoch_length = engine.state.epoch_length
        local = (engine.state.iteration - 1) % epoch_length if epoch_length else engine.state.iteration - 1
        last = epoch_length is not None and local + 1 == epoch_length
        return local % acc == 0, (local + 1) % acc == 0 or last

    @staticmethod
    def _device_type(engine: SupervisedTrainer) -> str:
        return torch.device(engine.state.device).type if engine.state.device is not None else "cpu"

    def _autocast(self, engine: SupervisedTrainer) -> contextlib.AbstractContextManager:
        """``torch.autocast`` on the engine's device type with ``amp_kwargs`` when ``amp`` is on."""
        if not engine.amp:
            return contextlib.nullcontext()
        return torch.autocast(self._device_type(engine), **engine.amp_kwargs)

    def _scaler(self, engine: SupervisedTrainer) -> Any:
        """MONAI's gradient scaler, used for float16 autocast on CUDA only (bfloat16 needs none)."""
        if engine.amp and self._device_type(engine) == "cuda":
            if engine.amp_kwargs.get("dtype", torch.float16) == torch.float16:
                return engine.scaler
        return None

    def _optimise(
        self,
        engine: SupervisedTrainer,
        loss: torch.Tensor,
        terms: Mapping[str, Any],
        what: str,
        step: bool,
        before_step: Callable[[], None] | None = None,
    ) -> bool:
        """Backward and (at ``step``) the optimiser step; the non-finite rule of the module docstring.

        Args:
            engine: the trainer.
            loss: the scalar loss of this iteration (not yet divided by ``accumulation_steps``).
            terms: the loss terms named in the message of a non-finite loss (scalars are shown).
            what: the loss's name in that message, e.g. ``"SISTA loss"``.
            step: whether this iteration ends an accumulation window.
            before_step: called after backward and before clipping at a step (e.g. a gradient all-reduce).

        Returns:
            ``True`` when the batch contributed gradients, ``False`` when it was skipped.
        """
        if self._accumulation(engine)[0]:
            self._window_finite = self._window_skipped = 0
        locally_finite = bool(torch.isfinite(loss.detach()).all())
        if finite_on_every_rank(locally_finite, loss.device):
            scaler = self._scaler(engine)
            scaled = loss / engine.accumulation_steps
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            self._window_finite += 1
            contributed = True
        else:
            self._skip(engine, loss, terms, what, locally_finite, step)
            contributed = False
        if step and self._window_finite:
            self._step(engine, before_step)
        return contributed

    def _skip(
        self,
        engine: SupervisedTrainer,
        loss: torch.Tensor,
        terms: Mapping[str, Any],
        what: str,
        locally_finite: bool,
        step: bool,
    ) -> None:
        """Raise, or log and count a skipped batch (its ``backward`` is not run), by ``nonfinite_loss``."""
        scalars = _scalars(terms)
        scalars.setdefault("loss", float(loss.detach()))
        where = "" if not locally_finite else " on another rank"
        message = (
            f"non-finite {what}{where} at iteration {engine.state.iteration} (epoch {engine.state.epoch}): "
            + ", ".join(f"{k}={v:.6g}" for k, v in sorted(scalars.items(), key=lambda kv: kv[0] != "loss"))
        )
        if self.nonfinite_loss == "raise":
            raise NonFiniteLossError(message)
        self._window_skipped += 1
        engine.state.skipped_iterations += 1
        if engine.accumulation_steps == 1:
            logger.warning("%s; batch skipped", message)
            return
        position = self._window_finite + self._window_skipped
        if step and not self._window_finite:
            outcome = "every micro-batch of this window was skipped: no optimiser step and no scheduler step"
        else:
            outcome = "the window's finite micro-batches are kept and its step averages over them"
        logger.warning("%s; batch skipped (micro-batch %d of its accumulation window; %s)", message, position, outcome)

    def _step(self, engine: SupervisedTrainer, before_step: Callable[[], None] | None) -> None:
        """The end of a window with finite micro-batches: rescale for skipped ones, clip, step, schedule."""
        scaler = self._scaler(engine)
        params = [p for g in engine.optimizer.param_groups for p in g["params"]]
        if before_step is not None:
            before_step()
        if self._window_skipped:
            factor = (self._window_finite + self._window_skipped) / self._window_finite
            with torch.no_grad():
                for p in params:
                    if p.grad is not None:
                        p.grad.mul_(factor)
        if self.grad_clip_norm is not None:
            if scaler is not None:
                scaler.unscale_(engine.optimizer)
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip_norm)
        if scaler is not None:
            scaler.step(engine.optimizer)
            scaler.update()
        else:
            engine.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()


class SafeSupervisedTrainer(SafeStep, SupervisedTrainer):
    """MONAI's :class:`~monai.engines.SupervisedTrainer` with the project's safe optimiser step.

    The iteration is ``SupervisedTrainer``'s — ``pred = inferer(inputs, network)``, ``loss =
    loss_function(pred, targets).mean()``, the same events and ``engine.state.output`` keys — followed by
    :class:`SafeStep`'s step. Used by the classification and segmentation bundles.

    Args:
        scheduler: a learning-rate scheduler stepped after every optimiser step (``None``: none).
        grad_clip_norm: clip the global gradient norm before each step (``None``: no clipping).
        nonfinite_loss: ``"raise"`` (default) or ``"skip"``; see :class:`SafeStep`.
        args, kwargs: :class:`~monai.engines.SupervisedTrainer` arguments (``amp``, ``amp_kwargs``,
            ``accumulation_steps``, ``optim_set_to_none``, handlers...).
    """

    def __init__(
        self,
        *args: Any,
        scheduler: Any = None,
        grad_clip_norm: float | None = None,
        nonfinite_loss: str = "raise",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.compile:
            raise ValueError("SafeSupervisedTrainer does not support compile=True; compile the network instead")
        self._init_safe_step(self, scheduler, grad_clip_norm, nonfinite_loss)

    def _iteration(self, engine: SupervisedTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        if len(batch) == 2:
            inputs, targets = batch
            args: tuple = ()
            kwargs: dict = {}
        else:
            inputs, targets, args, kwargs = batch
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        zero_grad, step = self._accumulation(engine)
        engine.network.train()
        if zero_grad:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with self._autocast(engine):
            engine.state.output[Keys.PRED] = engine.inferer(inputs, engine.network, *args, **kwargs)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            loss = engine.loss_function(engine.state.output[Keys.PRED], targets).mean()
        engine.state.output[Keys.LOSS] = loss
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        self._optimise(engine, loss, {Keys.LOSS: loss}, "loss", step)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
