"""Detection engines: MONAI's supervised trainer and evaluator with the iteration replaced by the detector's.

:class:`DetectionTrainer` and :class:`DetectionEvaluator` run MONAI's
:class:`~monai.apps.detection.networks.retinanet_detector.RetinaNetDetector` (built by
:func:`sista_monai.networks.detection.build_detector`): its training call returns the classification and box
regression losses, its inference call the boxes, scores and labels. The detector takes a list of targets,
which the stock engines cannot pass.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.data import MetaTensor
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer
from monai.utils import CommonKeys as Keys
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

from .step import SafeStep, decollated_scalars

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = [
    "DetectionTrainer",
    "DetectionEvaluator",
    "DetectorInferer",
]

logger = logging.getLogger(__name__)


def _as_plain_tensor(value: Any, device: torch.device | str | None, dtype: torch.dtype | None = None) -> torch.Tensor:
    tensor = value.as_tensor() if isinstance(value, MetaTensor) else torch.as_tensor(value)
    return tensor.to(device=device, dtype=dtype) if dtype is not None else tensor.to(device=device)


def _split_batch(engine: Any, batch: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Stack the images of a list batch (``no_collation``) and build the detector's targets."""
    if not isinstance(batch, (list, tuple)) or not batch:
        raise ValueError("the detection engines need a non-empty list batch (DataLoader collate_fn=no_collation)")
    device = engine.state.device
    images = torch.stack([_as_plain_tensor(item[Keys.IMAGE], device, torch.float32) for item in batch])
    targets = []
    for item in batch:
        if engine.box_key in item:
            targets.append(
                {
                    engine.box_key: _as_plain_tensor(item[engine.box_key], device, torch.float32).reshape(-1, 4),
                    engine.label_key: _as_plain_tensor(item[engine.label_key], device, torch.long).reshape(-1),
                }
            )
    return images, targets


class DetectionTrainer(SafeStep, SupervisedTrainer):
    """MONAI's :class:`SupervisedTrainer` training a :class:`RetinaNetDetector`.

    The data loader yields lists of per-image dicts (``collate_fn=no_collation``) with ``image`` (all of one
    size) and the target boxes and labels; each iteration calls ``detector(images, targets)`` in training mode,
    weights MONAI's classification (focal-free BCE on sampled anchors) and box-regression losses and steps the
    optimiser through :class:`~sista_monai.engines.step.SafeStep` (accumulation, autocast, scaler, clipping, a
    non-finite loss raised or skipped on every rank together). ``engine.state.output`` is MONAI's decollated form:
    one dict per image, each holding ``loss`` and each term's ``loss_<name>`` as numbers
    (:func:`~sista_monai.engines.step.decollated_scalars`; what ``--tracking mlflow`` reads). MONAI's RetinaNet
    heads refuse non-finite maps with a ``ValueError``; that counts as a non-finite loss, so the ranks agree on it
    too.

    Args:
        detector: the detector; its ``network`` must be the trainer's ``network``.
        loss_weights: weight of each of the detector's loss terms (``classification``, ``box_regression``).
        box_key: target boxes in each item.
        label_key: target labels in each item.
        scheduler: a learning-rate scheduler stepped after every optimiser step (``None``: none).
        grad_clip_norm: clip the global gradient norm before each step (``None``: no clipping).
        nonfinite_loss: ``"raise"`` (default) or ``"skip"``.
        args, kwargs: :class:`SupervisedTrainer` arguments (``loss_function`` may be omitted).
    """

    def __init__(
        self,
        *args: Any,
        detector: RetinaNetDetector,
        loss_weights: Mapping[str, float] | None = None,
        box_key: str = "box",
        label_key: str = "label",
        scheduler: Any = None,
        grad_clip_norm: float | None = None,
        nonfinite_loss: str = "raise",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("loss_function", nn.Identity())
        kwargs.setdefault("prepare_batch", _identity_batch)
        kwargs.setdefault("decollate", False)
        super().__init__(*args, **kwargs)
        if detector.network is not self.network:
            raise ValueError("the detector must wrap the trainer's network")
        self.detector = detector
        self.box_key = box_key
        self.label_key = label_key
        self.loss_weights = {detector.cls_key: 1.0, detector.box_reg_key: 1.0, **dict(loss_weights or {})}
        self._init_safe_step(self, scheduler, grad_clip_norm, nonfinite_loss)

    # MONAI types a batch as a dict; the detection loaders yield a list of items (collate_fn=no_collation)
    def _iteration(  # type: ignore[override]
        self, engine: SupervisedTrainer, batchdata: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        if not isinstance(engine, DetectionTrainer):
            raise TypeError(f"a DetectionTrainer iterates itself as the engine, got {type(engine).__name__}")
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        images, targets = _split_batch(engine, batchdata)
        if len(targets) != len(batchdata):
            raise ValueError(f"every training item needs {engine.box_key!r} and {engine.label_key!r}")
        zero_grad, step = self._accumulation(engine)
        engine.detector.train()
        if zero_grad:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        engine.state.output = {Keys.IMAGE: images, Keys.LABEL: targets}
        try:
            with self._autocast(engine):
                losses = engine.detector(images, targets)
        except ValueError as error:  # MONAI's RetinaNet heads refuse non-finite maps themselves
            if "NaN or Inf" not in str(error):
                raise
            logger.debug("detection heads refused a non-finite map: %s", error)
            nan = torch.tensor(float("nan"), device=images.device)
            losses = {engine.detector.cls_key: nan, engine.detector.box_reg_key: nan}
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        loss = sum(engine.loss_weights.get(k, 1.0) * v.float() for k, v in losses.items())
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        self._optimise(engine, loss, {f"loss_{k}": v for k, v in losses.items()}, "detection loss", step)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        output = decollated_scalars({**{f"loss_{k}": v for k, v in losses.items()}, Keys.LOSS: loss}, len(batchdata))
        engine.state.output = output
        return output


def _identity_batch(batchdata: Any, device: Any = None, non_blocking: bool = False, **kwargs: Any) -> Any:
    """``prepare_batch`` of the detection engines: the list batch is split in the iteration itself."""
    return batchdata


class DetectionEvaluator(SupervisedEvaluator):
    """MONAI's :class:`SupervisedEvaluator` running a :class:`RetinaNetDetector` in inference mode.

    ``engine.state.output`` is a list with one dict per image: ``pred_box`` ``(N, 4)``, ``pred_label`` ``(N,)``,
    ``pred_score`` ``(N,)`` (on the CPU), ``image`` (the input item's, with its metadata) and, when the item has
    targets, its ``box`` and ``label``. Run it with ``decollate=False``: the output is already per image,
    and a ``postprocessing`` transform runs on each (batch item, output item) pair.

    Args:
        detector: the detector; its ``network`` must be the evaluator's ``network``.
        box_key: target boxes in each item.
        label_key: target labels in each item.
        args, kwargs: :class:`SupervisedEvaluator` arguments.
    """

    def __init__(
        self, *args: Any, detector: RetinaNetDetector, box_key: str = "box", label_key: str = "label", **kwargs: Any
    ) -> None:
        kwargs.setdefault("prepare_batch", _identity_batch)
        kwargs.setdefault("decollate", False)
        super().__init__(*args, **kwargs)
        if detector.network is not self.network:
            raise ValueError("the detector must wrap the evaluator's network")
        self.detector = detector
        self.box_key = box_key
        self.label_key = label_key

    # MONAI types a batch and an output as dicts; here both are lists of per-image items (no_collation, decollate=False)
    def _iteration(  # type: ignore[override]
        self, engine: SupervisedEvaluator, batchdata: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        if not isinstance(engine, DetectionEvaluator):
            raise TypeError(f"a DetectionEvaluator iterates itself as the engine, got {type(engine).__name__}")
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        images, targets = _split_batch(engine, batchdata)
        engine.detector.eval()
        device_type = torch.device(engine.state.device).type if engine.state.device is not None else "cpu"
        autocast = torch.autocast(device_type, **engine.amp_kwargs) if engine.amp else contextlib.nullcontext()
        with engine.mode(engine.network), autocast:
            detections = engine.detector(images, use_inferer=False)
        score_key = engine.detector.pred_score_key
        outputs: list[dict[str, Any]] = []
        for index, (item, found) in enumerate(zip(batchdata, detections, strict=True)):
            output: dict[str, Any] = {
                Keys.IMAGE: item[Keys.IMAGE],
                "pred_box": found[engine.detector.target_box_key].detach().float().cpu(),
                "pred_label": found[engine.detector.target_label_key].detach().long().cpu(),
                "pred_score": found[score_key].detach().float().cpu(),
            }
            if len(targets) == len(batchdata):
                output[engine.box_key] = targets[index][engine.box_key].cpu()
                output[engine.label_key] = targets[index][engine.label_key].cpu()
            outputs.append(output)
        engine.state.batch = [dict(item) for item in batchdata]
        engine.state.output = outputs
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class _CallableNetwork(nn.Module):
    """A callable model that is not an ``nn.Module`` (MONAI Deploy's ``TorchScriptModel``) as the detector's network."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> Any:
        return self.model(images)


class DetectorInferer(Inferer):
    """A MONAI inferer that runs a :class:`RetinaNetDetector` around whichever network it is given.

    MONAI Deploy's bundle operator calls ``inferer(inputs=batch, network=model)`` with the network it loaded
    (the bundle's TorchScript ``model.ts``, which returns the RetinaNet head maps) and keeps the first item of
    the result. This inferer puts that network into the configured detector (anchors, box coder, score
    threshold, NMS) for the call and returns, per image, the detections under the keys the bundle's
    postprocessing reads: ``pred_box`` ``(N, 4)``, ``pred_score`` ``(N,)`` and ``pred_label`` ``(N,)`` in the
    network's input pixels (the postprocessing maps them back to the original image). A network that is a
    callable but not an ``nn.Module`` (MONAI Deploy's ``TorchScriptModel`` wrapper) is called as it is.

    Args:
        detector: the bundle's detector (``build_detector``); only its set-up is used, its own network is
            put back after each call.
    """

    def __init__(self, detector: RetinaNetDetector) -> None:
        super().__init__()
        self.detector = detector

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> list[dict[str, Any]]:
        detector = self.detector
        own = detector.network
        detector.network = network if isinstance(network, nn.Module) else _CallableNetwork(network)
        try:
            detector.eval()
            with torch.no_grad():
                detections = detector(_as_plain_tensor(inputs, inputs.device, torch.float32), use_inferer=False)
        finally:
            detector.network = own
        score_key = detector.pred_score_key
        return [
            {
                "pred_box": found[detector.target_box_key].detach().float().cpu(),
                "pred_score": found[score_key].detach().float().cpu(),
                "pred_label": found[detector.target_label_key].detach().long().cpu(),
            }
            for found in detections
        ]
