"""The files of zero-shot classification, written by handlers of its evaluator (the pretraining bundle's
``zero_shot.json``).

* :class:`ZeroShotWriter`: ``<output_dir>/<output name>.json`` per image, ``{"source": path relative to the input
  folder, "classes": [...], "probabilities": {class: p}}``, and ``<output_dir>/zero_shot.csv`` at the end (one row
  per image: ``source``, then one column per class).
* :class:`ZeroShotEvaluation`: ``eval/zero_shot.json`` when a labelled split is scored: the AUROC of every class
  with a percentile bootstrap 95 % interval over images (:func:`bootstrap_auroc`), the mean AUROC with its interval,
  the classes, the prompts and the number of images.

Nothing of a report is read or written, and no DICOM header value: an output names its input by path only.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from monai.metrics import compute_roc_auc
from monai.utils import IgniteInfo, min_version, optional_import

from sista_monai.data.prompts import PromptSet
from sista_monai.handlers.predictions import _PredictionWriter
from sista_monai.io.files import atomic_write_bytes, write_json

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "ZERO_SHOT_CSV",
    "ZeroShotEvaluation",
    "ZeroShotWriter",
    "bootstrap_auroc",
]

logger = logging.getLogger(__name__)

ZERO_SHOT_CSV = "zero_shot.csv"
"""The table of every image's probabilities, in the output folder."""

BOOTSTRAP_RESAMPLES = 2000
"""Resamples of the images for the AUROC intervals."""


def _rank_auroc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Mann–Whitney AUROC of every row of ``(R, n)`` scores (ties count one half); NaN for a row of one class."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)
    positives = positive.sum(axis=1)
    negatives = positive.shape[1] - positives
    with np.errstate(invalid="ignore", divide="ignore"):
        auroc = ((ranks * positive).sum(axis=1) - positives * (positives + 1) / 2) / (positives * negatives)
    return np.where((positives > 0) & (negatives > 0), auroc, np.nan)


def bootstrap_auroc(
    scores: np.ndarray | torch.Tensor | Sequence[Sequence[float]],
    labels: np.ndarray | torch.Tensor | Sequence[Sequence[float]],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """AUROC of every column with a percentile bootstrap interval, and their mean with its interval.

    The point values are MONAI's :func:`~monai.metrics.compute_roc_auc`. The intervals resample the images (rows)
    with replacement, the same rows for every class, so that the mean's interval keeps the classes' correlation; a
    resample in which a class has only one label value gives that class no AUROC and the mean none.

    Args:
        scores: ``(n, C)`` scores (higher: more likely positive).
        labels: ``(n, C)`` 0/1 truth.
        resamples: bootstrap resamples.
        seed: seed of the resampling (the intervals are reproducible).
        alpha: two-sided level (``0.05``: 95 % intervals).

    Returns:
        ``{"auroc": [C], "low": [C], "high": [C], "positives": [C], "mean": m, "mean_low", "mean_high"}``; NaN
        for a class with one label value only (left out of the mean), and for an interval no resample defines.

    Raises:
        ValueError: shapes that differ or are not ``(n, C)``.
    """
    score = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(labels, dtype=np.float64) >= 0.5
    if score.ndim != 2 or score.shape != truth.shape:
        raise ValueError(f"scores {score.shape} and labels {truth.shape} must both be (n, C)")
    n, classes = score.shape
    positives = truth.sum(axis=0)
    defined = (positives > 0) & (positives < n)
    auroc = np.full(classes, np.nan)
    for c in np.flatnonzero(defined):
        value = compute_roc_auc(torch.as_tensor(score[:, c]), torch.as_tensor(truth[:, c], dtype=torch.float))
        auroc[c] = float(np.asarray(value))
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(int(resamples), n)) if n else np.zeros((int(resamples), 0), dtype=np.int64)
    sampled = np.full((int(resamples), classes), np.nan)
    for c in np.flatnonzero(defined):
        sampled[:, c] = _rank_auroc(score[index, c], truth[index, c])

    def interval(values: np.ndarray) -> tuple[float, float]:
        finite = values[np.isfinite(values)]
        if not finite.size:
            return math.nan, math.nan
        low, high = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        return float(low), float(high)

    bounds = [interval(sampled[:, c]) for c in range(classes)]
    if defined.any():
        mean = float(auroc[defined].mean())
        mean_low, mean_high = interval(sampled[:, defined].mean(axis=1))
    else:
        mean = mean_low = mean_high = math.nan
    return {
        "auroc": auroc.tolist(),
        "low": [b[0] for b in bounds],
        "high": [b[1] for b in bounds],
        "positives": positives.astype(int).tolist(),
        "mean": mean,
        "mean_low": mean_low,
        "mean_high": mean_high,
    }


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


class ZeroShotWriter(_PredictionWriter):
    """Write ``<output_dir>/<output name>.json`` for every image and ``<output_dir>/zero_shot.csv`` at the end.

    Reads the evaluator output of :class:`~sista_monai.engines.ZeroShotInferer` (``pred["probabilities"]``,
    ``pred["classes"]``) and :class:`~sista_monai.engines.ZeroShotPrepareBatch` (``label["source"]``,
    ``label["output_name"]``).

    Args:
        output_dir: folder of the files (created).
        csv_name: the table's file name.
    """

    def __init__(self, output_dir: str | os.PathLike, csv_name: str = ZERO_SHOT_CSV) -> None:
        super().__init__(output_dir, None, "image", None, None)
        self.csv_name = csv_name
        self.classes: list[str] = []
        self.rows: list[tuple[str, list[float]]] = []

    def attach(self, engine: Engine) -> None:
        """Start afresh with every run, write after every iteration, write the table at the end."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self.write_table)

    def _reset(self, engine: Engine) -> None:
        self.rows = []

    def __call__(self, engine: Engine) -> None:
        output = cast(dict[str, Any], engine.state.output)
        pred, label = output["pred"], output["label"]
        self.classes = list(pred["classes"])
        probabilities = pred["probabilities"].detach().float().cpu().tolist()
        for source, name, values in zip(label["source"], label["output_name"], probabilities, strict=True):
            record = {
                "source": source,
                "classes": self.classes,
                "probabilities": dict(zip(self.classes, values, strict=True)),
            }
            self._write_as(name, record, sort_keys=False)
            self.rows.append((source, values))

    def write_table(self, engine: Engine | None = None) -> Path:
        """Write ``zero_shot.csv``: a header ``source,<class>,...`` and one row per image; returns its path."""
        text = io.StringIO()
        table = csv.writer(text, lineterminator="\n")
        table.writerow(["source", *self.classes])
        for source, values in self.rows:
            table.writerow([source, *(repr(v) for v in values)])
        path = atomic_write_bytes(self.output_dir / self.csv_name, text.getvalue().encode("utf-8"))
        logger.info("zero-shot probabilities of %d images in %s (%s)", len(self.rows), self.output_dir, self.csv_name)
        return path


class ZeroShotEvaluation:
    """Write ``zero_shot.json``: every class's AUROC against the labels, with bootstrap intervals, at the end of a run.

    Reads ``pred["probabilities"]``, ``pred["classes"]``, ``pred["temperature"]`` and ``label["labels"]`` (aligned
    with ``label_names``).

    Args:
        output_file: the report (``<bundle>/eval/zero_shot.json``).
        label_names: the classes of the label vectors (the datalist's ``label_names``).
        prompts: the prompt set scored (recorded in the report).
        split: the datalist split evaluated (recorded).
        resamples: bootstrap resamples of the intervals.
        seed: seed of the resampling.

    Raises:
        ValueError: (at the end) a scored class that is not among ``label_names``, or no labels in the output.
    """

    def __init__(
        self,
        output_file: str | os.PathLike,
        label_names: Sequence[str],
        prompts: PromptSet,
        split: str | None = "test",
        resamples: int = BOOTSTRAP_RESAMPLES,
        seed: int = 0,
    ) -> None:
        self.output_file = Path(output_file)
        self.label_names = list(label_names)
        self.prompts = prompts
        self.split = split
        self.resamples = int(resamples)
        self.seed = int(seed)
        self.probabilities: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.classes: list[str] = []
        self.temperature: float | None = None
        self.summary: dict[str, Any] = {}

    def attach(self, engine: Engine) -> None:
        """Collect every iteration's probabilities and labels; write the report at the end."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def _reset(self, engine: Engine) -> None:
        self.probabilities, self.labels = [], []

    def __call__(self, engine: Engine) -> None:
        output = cast(dict[str, Any], engine.state.output)
        pred, label = output["pred"], output["label"]
        if label.get("labels") is None:
            raise ValueError("zero-shot evaluation needs the labels of every image (label['labels'])")
        self.classes, self.temperature = list(pred["classes"]), float(pred["temperature"])
        self.probabilities.append(pred["probabilities"].detach().float().cpu())
        self.labels.append(torch.as_tensor(label["labels"], dtype=torch.float32).cpu())

    def evaluate(self) -> dict[str, Any]:
        """The report of the collected predictions (see the module docstring)."""
        unlabelled = [name for name in self.classes if name not in self.label_names]
        if unlabelled:
            raise ValueError(f"the classes {unlabelled} are not among the label names {self.label_names}")
        columns = [self.label_names.index(name) for name in self.classes]
        probabilities = torch.cat(self.probabilities) if self.probabilities else torch.zeros(0, len(self.classes))
        labels = torch.cat(self.labels)[:, columns] if self.labels else torch.zeros(0, len(self.classes))
        result = bootstrap_auroc(probabilities.numpy(), labels.numpy(), self.resamples, self.seed)
        n = int(probabilities.shape[0])
        return {
            "classes": self.classes,
            "split": self.split,
            "n_images": n,
            "auroc": {c: _finite_or_none(v) for c, v in zip(self.classes, result["auroc"], strict=True)},
            "auroc_interval": {
                c: [_finite_or_none(lo), _finite_or_none(hi)]
                for c, lo, hi in zip(self.classes, result["low"], result["high"], strict=True)
            },
            "positives": dict(zip(self.classes, result["positives"], strict=True)),
            "mean_auroc": _finite_or_none(result["mean"]),
            "mean_auroc_interval": [_finite_or_none(result["mean_low"]), _finite_or_none(result["mean_high"])],
            "interval": (
                f"percentile bootstrap 95 % interval over the images ({self.resamples} resamples, seed {self.seed}); "
                "the mean is over the classes with both label values"
            ),
            "temperature": self.temperature,
            "prompts": {"source": self.prompts.source, "classes": self.prompts.to_dict()},
        }

    def write(self, engine: Engine | None = None) -> Path:
        """Write the report; returns its path."""
        self.summary = self.evaluate()
        path = write_json(self.output_file, self.summary, sort_keys=False)
        aurocs: Mapping[str, float | None] = self.summary["auroc"]
        mean = self.summary["mean_auroc"]
        logger.info(
            "zero-shot AUROC on %d %s images: mean %s; %s (%s)",
            self.summary["n_images"],
            self.split or "",
            "n/a" if mean is None else f"{mean:.3f}",
            ", ".join(f"{c} {'n/a' if v is None else f'{v:.3f}'}" for c, v in aurocs.items()),
            path,
        )
        return path
