"""Per-image prediction files of the downstream inference bundles: one JSON per input image, written atomically."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from sista_monai.data.inference import output_stem
from sista_monai.data.tasks import source_file
from sista_monai.io.files import write_json
from sista_monai.io.predictions import classification_record, detection_record, image_size

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = [
    "ClassificationJSONWriter",
    "DetectionJSONWriter",
    "EmbeddingJSONWriter",
]

logger = logging.getLogger(__name__)


class _PredictionWriter:
    """What every inference writer shares (these and :mod:`sista_monai.handlers.pretrain_inference`'s): the output folder, the names, the extra entries, one JSON per image after every
    iteration, named by :func:`~sista_monai.data.inference.output_stem` and written atomically."""

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Mapping[str, str] | None,
        image_key: str,
        extra: Mapping[str, Any] | None,
        root: str | os.PathLike | None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.root = root
        self.class_names = {str(k): str(v) for k, v in (class_names or {}).items()}
        self.image_key = image_key
        self.extra = dict(extra or {})
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        """Write after every iteration."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Write the files of the iteration's images."""
        raise NotImplementedError

    def _write(self, source: str, record: Mapping[str, Any]) -> Path:
        return self._write_as(output_stem(source, self.root), record)

    def _write_as(self, name: str, record: Mapping[str, Any], sort_keys: bool = True) -> Path:
        """Write ``<output_dir>/<name>.json`` (``name`` may hold subfolders, created)."""
        path = write_json(self.output_dir / f"{name}.json", {**record, **self.extra}, sort_keys=sort_keys)
        self.written.append(path)
        return path


class ClassificationJSONWriter(_PredictionWriter):
    """Write ``<output_dir>/<output name>.json`` with the predicted probability of every image.

    Each file holds ``{"image": <input file name>, "probability": p, "prediction": 0|1, "threshold": t,
    "label": <class name of the prediction>}`` for a one-output network (``"probabilities"`` as a list for
    several outputs). Attach to the inference evaluator (``decollate=True``); the iteration output items must
    carry the prediction under ``pred_key`` and the loaded image (whose metadata names the file) under
    ``image_key``.

    Args:
        output_dir: the output folder (created when missing).
        threshold: a probability ``>= threshold`` is a positive prediction.
        class_names: names of the negative and positive class, e.g. ``{"0": "no opacity", "1": "Lung Opacity"}``.
        pred_key: key of the probability in each output item.
        image_key: key of the input image in each output item.
        extra: further entries written to every file (e.g. the model version).
        root: the inference input folder: outputs are named by
            :func:`~sista_monai.data.inference.output_stem` relative to it (subfolders kept; ``None``: the stem).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        threshold: float = 0.5,
        class_names: Mapping[str, str] | None = None,
        pred_key: str = "pred",
        image_key: str = "image",
        extra: Mapping[str, Any] | None = None,
        root: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(output_dir, class_names, image_key, extra, root)
        self.threshold = float(threshold)
        self.pred_key = pred_key

    def record(self, probability: torch.Tensor | Sequence[float] | float, source: str | None) -> dict[str, Any]:
        """The JSON content for one image (:func:`~sista_monai.io.predictions.classification_record`)."""
        return classification_record(probability, source, self.threshold, self.class_names)

    def write(self, probability: torch.Tensor | Sequence[float] | float, source: str) -> Path:
        """Write the JSON of one image named after ``source`` and return its path."""
        return self._write(source, self.record(probability, source))

    def __call__(self, engine: Engine) -> None:
        outputs: Any = engine.state.output
        items = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for item in items:
            source = source_file(item.get(self.image_key))
            if source is None:
                raise ValueError(f"the inference output has no source file name under {self.image_key!r}")
            self.write(item[self.pred_key], source)
        engine.logger.debug("wrote %d prediction files to %s", len(items), self.output_dir)


class DetectionJSONWriter(_PredictionWriter):
    """Write ``<output_dir>/<output name>.json`` with the boxes, scores and labels found in every image.

    Each file holds ``{"image": <input file name>, "width", "height", "box_mode": "xyxy", "boxes": [[x1, y1, x2,
    y2], ...], "boxes_xywh": [[x, y, width, height], ...], "scores": [...], "labels": [...], "label_names": [...]}``
    in the input file's pixel coordinates (x: column, y: row, as RSNA's labels), sorted by decreasing score.
    Attach to the inference evaluator after the post-processing that maps the boxes back
    (:class:`BoxesToOriginalPixelsd`).

    Args:
        output_dir: the output folder (created when missing).
        class_names: ``{"0": "Lung Opacity"}``.
        box_key, score_key, label_key: keys of the prediction in each output item.
        image_key: key of the loaded image in each batch item (its metadata names the file).
        extra: further entries written to every file.
        root: the inference input folder: outputs are named by
            :func:`~sista_monai.data.inference.output_stem` relative to it (subfolders kept; ``None``: the stem).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Mapping[str, str] | None = None,
        box_key: str = "pred_box",
        score_key: str = "pred_score",
        label_key: str = "pred_label",
        image_key: str = "image",
        extra: Mapping[str, Any] | None = None,
        root: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(output_dir, class_names, image_key, extra, root)
        self.box_key = box_key
        self.score_key = score_key
        self.label_key = label_key

    def record(self, output: Mapping[str, Any], image: Any) -> dict[str, Any]:
        """The JSON content for one image (:func:`~sista_monai.io.predictions.detection_record`)."""
        return detection_record(
            output[self.box_key],
            output[self.score_key],
            output[self.label_key],
            source_file(image),
            image_size(image),
            self.class_names,
        )

    def __call__(self, engine: Engine) -> None:
        batch: Any = engine.state.batch
        outputs: Any = engine.state.output
        for item, output in zip(batch, outputs, strict=True):
            image = item.get(self.image_key)
            source = source_file(image)
            if source is None:
                raise ValueError(f"the inference batch has no source file name under {self.image_key!r}")
            self._write(source, self.record(output, image))
        engine.logger.debug("wrote %d detection files to %s", len(outputs), self.output_dir)


class EmbeddingJSONWriter(_PredictionWriter):
    """Write ``<output_dir>/<output name>.json`` with the image-only network's feature vector of every image.

    Each file holds ``{"image": <input file name>, "space": "image_encoder", "embed_dim": C, "embedding": [C
    floats]}``: the global image features of the pretrained encoder (:class:`~sista_monai.networks.GlobalImageFeatures`, the packaged
    pretraining bundle's ``network_def``), as the downstream heads receive them (not L2-normalised). Attach to the
    inference evaluator (``decollate=True``).

    Args:
        output_dir: the output folder (created when missing).
        pred_key: key of the feature vector in each output item.
        image_key: key of the input image in each output item (its metadata names the file).
        extra: further entries written to every file.
        root: the inference input folder: outputs are named by
            :func:`~sista_monai.data.inference.output_stem` relative to it (subfolders kept; ``None``: the stem).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        pred_key: str = "pred",
        image_key: str = "image",
        extra: Mapping[str, Any] | None = None,
        root: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(output_dir, None, image_key, extra, root)
        self.pred_key = pred_key

    def __call__(self, engine: Engine) -> None:
        outputs: Any = engine.state.output
        items = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for item in items:
            source = source_file(item.get(self.image_key))
            if source is None:
                raise ValueError(f"the inference output has no source file name under {self.image_key!r}")
            values = [float(v) for v in torch.as_tensor(item[self.pred_key], dtype=torch.float32).reshape(-1).tolist()]
            record = {
                "image": Path(source).name,
                "space": "image_encoder",
                "embed_dim": len(values),
                "embedding": values,
            }
            self._write(source, record)
        engine.logger.debug("wrote %d embedding files to %s", len(items), self.output_dir)
