"""Inference interface of the downstream bundles: every image of a folder in, one JSON per image out.

``python -m monai.bundle run --config_file <bundle>/configs/inference.json --dataset_dir IN --output_dir OUT``
lists the DICOM/PNG/JPEG files directly in ``IN`` (:func:`inference_datalist`) and writes
``OUT/<input file stem>.json`` for each (:class:`ClassificationJSONWriter`, an Ignite handler on the
inference evaluator, as model-zoo classification bundles attach ``ClassificationSaver``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from monai.data import MetaTensor
from monai.utils import IgniteInfo, min_version, optional_import

from sista_monai.engines.inference import image_files
from sista_monai.handlers.export import atomic_write_bytes

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["inference_datalist", "source_file", "ClassificationJSONWriter"]

logger = logging.getLogger(__name__)


def inference_datalist(folder: str | os.PathLike, image_key: str = "image") -> list[dict[str, str]]:
    """``[{"image": path}, ...]`` for the DICOM (``.dcm``/``.dicom``/``.dic``), PNG and JPEG files in ``folder``.

    Raises:
        FileNotFoundError: ``folder`` is not a directory.
        ValueError: no image file in it, or two files share a stem (their outputs would overwrite each other).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset_dir {folder} is not a folder of DICOM/PNG/JPEG images")
    files = image_files(folder)
    if not files:
        raise ValueError(f"dataset_dir {folder} holds no DICOM (.dcm/.dicom/.dic), PNG or JPEG file")
    stems: dict[str, Path] = {}
    for path in files:
        if path.stem in stems:
            raise ValueError(
                f"{stems[path.stem].name} and {path.name} in {folder} would both be written to {path.stem}.json; "
                "rename one of them"
            )
        stems[path.stem] = path
    return [{image_key: str(path)} for path in files]


def source_file(image: Any) -> str | None:
    """The file an image was loaded from (its ``filename_or_obj`` metadata), if any."""
    if isinstance(image, MetaTensor):
        name = image.meta.get("filename_or_obj")
        return str(name) if name else None
    return None


class ClassificationJSONWriter:
    """Write ``<output_dir>/<input file stem>.json`` with the predicted probability of every image.

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
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        threshold: float = 0.5,
        class_names: Mapping[str, str] | None = None,
        pred_key: str = "pred",
        image_key: str = "image",
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.threshold = float(threshold)
        self.class_names = {str(k): str(v) for k, v in (class_names or {}).items()}
        self.pred_key = pred_key
        self.image_key = image_key
        self.extra = dict(extra or {})
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        """Write after every iteration."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def record(self, probability: torch.Tensor | Sequence[float] | float, source: str | None) -> dict[str, Any]:
        """The JSON content for one image."""
        values = [float(v) for v in torch.as_tensor(probability, dtype=torch.float32).reshape(-1).tolist()]
        record: dict[str, Any] = {"image": Path(source).name if source else None}
        if len(values) == 1:
            prediction = int(values[0] >= self.threshold)
            record.update({"probability": values[0], "prediction": prediction, "threshold": self.threshold})
            if self.class_names:
                record["label"] = self.class_names.get(str(prediction))
        else:
            record["probabilities"] = values
        return {**record, **self.extra}

    def write(self, probability: torch.Tensor | Sequence[float] | float, source: str) -> Path:
        """Write the JSON of one image named after ``source`` and return its path."""
        path = self.output_dir / f"{Path(source).stem}.json"
        atomic_write_bytes(
            path, (json.dumps(self.record(probability, source), indent=2, sort_keys=True) + "\n").encode()
        )
        self.written.append(path)
        return path

    def __call__(self, engine: Engine) -> None:
        outputs = engine.state.output
        items = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for item in items:
            source = source_file(item.get(self.image_key))
            if source is None:
                raise ValueError(f"the inference output has no source file name under {self.image_key!r}")
            self.write(item[self.pred_key], source)
        engine.logger.debug("wrote %d prediction files to %s", len(items), self.output_dir)
