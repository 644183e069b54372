"""The files of image–report retrieval (``configs/retrieval.json``), written by handlers of its image evaluator.

Two modes, chosen by the bundle's ``dataset_dir`` (see :class:`~sista_monai.engines.RetrievalInputs`):

* **retrieve** (a folder of images): :class:`RetrievalWriter` writes ``<output_dir>/<stem>.json`` per image, the
  ``top_k`` reports of the report bank most similar to it (their ids and cosine similarities, best first), and
  ``<output_dir>/report_to_image.json``, the ``top_k`` images of the run most similar to each report of the bank;
* **evaluate** (the truth split): :class:`RetrievalReport` writes ``<eval_dir>/retrieval.json``, exact-pair
  Recall@1/5/10 both ways and semantic precision@5 with their chance levels, computed by
  :mod:`sista_monai.metrics.retrieval` and arranged by :func:`~sista_monai.metrics.pretraining.summarise_test_metrics`
  under the keys of the pretraining test report's ``retrieval`` block.

Both read the evaluator output of :class:`~sista_monai.engines.SISTARetrievalInferer` (``pred["image_emb"]``,
``pred["similarity"]``) and :class:`~sista_monai.engines.SISTAInferencePrepareBatch` (``label["source"]``: the output
name of each image), and the report bank (:class:`~sista_monai.engines.ReportBank`: ``ids``, ``embeddings`` and, for
the evaluation, ``input_ids``/``attention_mask``/``labels``).

Privacy: a report is named by its id (its file name relative to the bank folder, or its datalist id), never by its
text; an image by its output name (:func:`~sista_monai.data.inference.output_stem`).

Ranking (:func:`~sista_monai.metrics.retrieval.top_k_matches`): candidates sorted by decreasing similarity; equal
similarities keep the order of the candidates (the bank's order, the run's image order), so the files are
reproducible.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from sista_monai.data.inference import REPORT_TO_IMAGE_FILE
from sista_monai.handlers.predictions import _PredictionWriter
from sista_monai.io.files import write_json
from sista_monai.metrics.pretraining import TARGETS, summarise_test_metrics
from sista_monai.metrics.retrieval import (
    DIRECTIONS,
    retrieval_recall,
    semantic_chance,
    semantic_precision,
    text_groups,
    top_k_matches,
)

from .reports import EvaluationReport

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = [
    "RECALL_KS",
    "RetrievalReport",
    "RetrievalWriter",
]

logger = logging.getLogger(__name__)

RECALL_KS = (1, 5, 10)
"""The K of the exact-pair Recall@K of the evaluation (those of the pretraining test report)."""


class _Bank(Protocol):
    ids: list[str]

    @property
    def embeddings(self) -> torch.Tensor: ...


def _matches(scores: torch.Tensor, indices: torch.Tensor, names: list[str], key: str) -> list[dict[str, Any]]:
    return [{key: names[j], "score": float(s)} for s, j in zip(scores.tolist(), indices.tolist(), strict=True)]


class RetrievalWriter(_PredictionWriter):
    """Retrieve mode: ``<stem>.json`` per image after each iteration, ``report_to_image.json`` at completion.

    ``<stem>.json`` = ``{"image": stem, "top_k": k, "reports": [{"report": id, "score": cosine}, ...]}``;
    ``report_to_image.json`` = ``{"top_k": k, "images": n, "reports": {id: [{"image": stem, "score": cosine}, ...]}}``
    (over the images of this run that could be read).

    Args:
        output_dir: folder of the files (created).
        bank: the report bank (:class:`~sista_monai.engines.ReportBank`), to name the reports.
        top_k: how many matches to write per image and per report.
    """

    def __init__(self, output_dir: str | os.PathLike, bank: Any, top_k: int = 5) -> None:
        if int(top_k) < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        super().__init__(output_dir, None, "image", None, None)
        self.bank = cast(_Bank, bank)
        self.top_k = int(top_k)
        self.reset()

    def attach(self, engine: Engine) -> None:
        """Write per image after every iteration, the report → image file at completion."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self.write_report_to_image)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the images of an earlier epoch."""
        self.names: list[str] = []
        self.rows: list[torch.Tensor] = []

    def __call__(self, engine: Engine) -> None:
        output = cast(dict[str, Any], engine.state.output)
        similarity = output["pred"]["similarity"].detach().float().cpu()
        names = [str(name) for name in output["label"]["source"]]
        scores, indices = top_k_matches(similarity, self.top_k)
        for row, name in enumerate(names):
            record = {
                "image": name,
                "top_k": self.top_k,
                "reports": _matches(scores[row], indices[row], self.bank.ids, "report"),
            }
            self._write_as(name, record)
        self.names += names
        self.rows.append(similarity)

    def write_report_to_image(self, engine: Engine | None = None) -> Path:
        """Write ``report_to_image.json`` from the images seen; returns its path."""
        similarity = torch.cat(self.rows) if self.rows else torch.zeros(0, len(self.bank.ids))
        reports: dict[str, list[dict[str, Any]]] = {report: [] for report in self.bank.ids}
        if self.names:
            scores, indices = top_k_matches(similarity.T, self.top_k)
            reports = {
                report: _matches(scores[j], indices[j], self.names, "image") for j, report in enumerate(self.bank.ids)
            }
        path = write_json(
            self.output_dir / REPORT_TO_IMAGE_FILE, {"top_k": self.top_k, "images": len(self.names), "reports": reports}
        )
        logger.info(
            "retrieved the top %d of %d reports for %d images (and the reverse) into %s",
            self.top_k,
            len(self.bank.ids),
            len(self.names),
            self.output_dir,
        )
        return path


class RetrievalReport(EvaluationReport):
    """Evaluate mode: ``<output_dir>/<metrics_file>`` with the retrieval figures of the pretraining test report.

    The images and the reports of the split are paired by id (the image of datalist item ``i`` with its own report);
    exact-pair Recall@K ties identical report texts (:func:`~sista_monai.metrics.retrieval.text_groups`) as the
    pretraining evaluation does. The file holds ``split``, ``n_pairs``, ``retrieval`` (``image_to_report`` and
    ``report_to_image`` ``R@1/5/10``, their ``chance``, and ``semantic``: ``precision_at_5`` and ``chance``), and
    ``measured``/``targets``/``targets_met`` for ``semantic_precision_over_chance``.

    Args:
        output_dir: the bundle's ``eval/`` folder.
        bank: the split's reports (:class:`~sista_monai.engines.ReportBank` with ``labels``).
        split: the split's name in the report.
        metrics_file: the file name.
    """

    def __init__(
        self, output_dir: str | os.PathLike, bank: Any, split: str = "test", metrics_file: str = "retrieval.json"
    ) -> None:
        self.bank = bank
        super().__init__(output_dir, split, None, metrics_file)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the images of an earlier epoch."""
        self.names: list[str] = []
        self.embeddings: list[torch.Tensor] = []

    def collect(self, engine: Engine) -> None:
        """Keep each image's embedding and name."""
        output = cast(dict[str, Any], engine.state.output)
        self.embeddings.append(output["pred"]["image_emb"].detach().float().cpu())
        self.names += [str(name) for name in output["label"]["source"]]

    def summarise(self, engine: Engine, gathered: Any) -> dict[str, Any]:
        """The retrieval figures of the split (see the class docstring)."""
        bank = self.bank
        if sorted(self.names) != sorted(bank.ids) or len(set(self.names)) != len(self.names):
            raise ValueError(
                f"the evaluation pairs every image with its own report by id: {len(self.names)} images and "
                f"{len(bank.ids)} reports do not share their ids one to one"
            )
        if bank.labels is None:
            raise ValueError("semantic precision needs the finding 'labels' of every item of the evaluation split")
        position = {name: i for i, name in enumerate(self.names)}
        images = torch.cat(self.embeddings)[[position[report] for report in bank.ids]]
        reports = bank.embeddings.float().cpu()
        groups = text_groups(bank.input_ids, bank.attention_mask)
        metrics: dict[str, float] = {}
        for direction in DIRECTIONS:
            recall = retrieval_recall(images, reports, RECALL_KS, direction, groups)
            metrics.update({f"recall_at_{k}_{direction}": recall[k] for k in RECALL_KS})
        metrics["semantic_precision_at_5"] = semantic_precision(images, reports, bank.labels, 5)
        metrics["semantic_precision_chance"] = semantic_chance(bank.labels)
        summary = summarise_test_metrics(metrics, len(bank.ids))
        target = "semantic_precision_over_chance"
        return {
            "split": self.split,
            "n_pairs": len(bank.ids),
            "retrieval": summary["retrieval"],
            "measured": {target: summary["measured"][target]},
            "targets": {target: TARGETS[target]},
            "targets_met": {target: summary["targets_met"][target]},
        }

    def log(self, engine: Engine, summary: Mapping[str, Any]) -> None:
        """The headline figures beside their chance levels."""
        r = summary["retrieval"]
        logger.info(
            "retrieval on %s (%d pairs): semantic precision@5 %.3f (chance %.3f); image->report R@1/5/10 = "
            "%.3f/%.3f/%.3f; report->image R@1/5/10 = %.3f/%.3f/%.3f (chance R@5 %.3f)",
            summary["split"],
            summary["n_pairs"],
            r["semantic"]["precision_at_5"],
            r["semantic"]["chance"],
            *(r["image_to_report"][f"R@{k}"] for k in RECALL_KS),
            *(r["report_to_image"][f"R@{k}"] for k in RECALL_KS),
            r["chance"]["R@5"],
        )
