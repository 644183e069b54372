"""Image–report retrieval with a pretrained SISTA model: images → the most similar reports of a bank, and back.

The pretraining bundle's ``retrieval.json`` (layered on ``train.json``) has two modes, chosen by ``dataset_dir``:

* ``dataset_dir`` **null** (the default) — **evaluate**: the images and reports of one split of a datalist with truth
  (``evaluation_split`` of ``datalist``: the demo's ``test`` split by default) are encoded; the reports of the split
  are the bank, and :class:`~sista_monai.handlers.RetrievalReport` writes ``eval/retrieval.json`` (exact-pair
  Recall@1/5/10 both ways, semantic precision@5 and their chance levels, through :mod:`sista_monai.metrics`).
* ``dataset_dir`` **a folder of images** — **retrieve**: its images (:class:`~sista_monai.data.inference.InferenceInputs`:
  DICOM found by content, subfolders, unreadable files listed in ``errors.json``) against the reports of
  ``report_bank`` (a folder of ``.txt``/``.xml`` report files, or a datalist JSON with ``report_bank_split``);
  :class:`~sista_monai.handlers.RetrievalWriter` writes the top-k files.

:class:`RetrievalInputs` reads the inputs of either mode (every argument is a plain value, so that the config can
build it in both), :class:`ReportBank` tokenises the reports once and encodes them with the run's network on first
use, and :class:`SISTARetrievalInferer` is the image evaluator's inferer: image → global embedding and its cosine
similarity to every report of the bank.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from sista_monai.data.datalist import load_datalist_split
from sista_monai.data.inference import ERRORS_FILE, REPORT_TO_IMAGE_FILE, InferenceInputs
from sista_monai.errors import SistaDataError
from sista_monai.io.files import write_json
from sista_monai.metrics.retrieval import cosine_similarity

from .inference import REPORT_SUFFIXES

__all__ = ["ReportBank", "RetrievalInputs", "SISTARetrievalInferer", "report_bank_items"]

logger = logging.getLogger(__name__)

RESERVED_NAMES = (Path(REPORT_TO_IMAGE_FILE).stem, Path(ERRORS_FILE).stem)
"""Output names an image cannot take in the retrieve mode's folder (it keeps its extension instead)."""


def _item_id(item: Mapping[str, Any], split: str, index: int) -> str:
    return str(item["id"]) if item.get("id") is not None else f"{split}_{index}"


def report_bank_items(report_bank: str | os.PathLike, split: str = "test") -> list[dict[str, str]]:
    """The reports of a bank: ``[{"id": ..., "report": text or report file}, ...]`` in a reproducible order.

    Args:
        report_bank: a folder of report files (``.txt`` MIMIC-style text, ``.xml`` IU XML; subfolders included,
            hidden entries skipped), whose ids are their paths relative to the folder (``/``-separated, extension
            kept); or a datalist JSON whose ``split`` items carry a ``report`` (text or a report file), whose ids
            are the items' ``id`` (``<split>_<index>`` without one).
        split: the datalist split (a folder ignores it).

    Raises:
        FileNotFoundError: ``report_bank`` is neither a folder nor a file.
        ValueError: the bank holds no report, an item has no report, or two reports share an id.
    """
    path = Path(report_bank)
    if path.is_dir():
        items = []
        for current, folders, files in os.walk(path):
            folders[:] = sorted(f for f in folders if not f.startswith("."))
            for name in sorted(files):
                if not name.startswith(".") and name.lower().endswith(REPORT_SUFFIXES):
                    file = Path(current) / name
                    items.append({"id": file.relative_to(path).as_posix(), "report": str(file)})
        items.sort(key=lambda item: item["id"])
    elif path.is_file():
        items = []
        for index, item in enumerate(load_datalist_split(path, split, path_keys=())):
            report_id = _item_id(item, split, index)
            if not isinstance(item.get("report"), str):
                raise ValueError(f"report_bank {path.name}: item {report_id} of split {split!r} has no 'report'")
            items.append({"id": report_id, "report": item["report"]})
    else:
        raise FileNotFoundError(f"report_bank {path} is neither a folder of .txt/.xml reports nor a datalist JSON file")
    if not items:
        raise ValueError(f"report_bank {path} holds no report (.txt/.xml files, or items of split {split!r})")
    _unique([item["id"] for item in items], f"report_bank {path}")
    return items


def _unique(ids: Sequence[str], source: str) -> None:
    repeated = sorted(i for i, count in Counter(ids).items() if count > 1)
    if repeated:
        raise ValueError(f"{source}: ids must be unique; repeated: {repeated[:5]}")


def _reason(err: BaseException) -> str:
    """The PHI-free reason of a report failure: the project's data error, also when MONAI's Compose wrapped it."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, SistaDataError):
            return cause.reason
        cause = cause.__cause__
    return f"cannot be read: unexpected {type(err).__name__}"


class ReportBank:
    """The reports retrieved from: tokenised once, encoded by the run's network on first use.

    Args:
        ids: the report ids, in bank order.
        input_ids: ``(R, T)`` token ids.
        attention_mask: ``(R, T)``.
        labels: ``(R, C)`` finding vectors (the evaluation's semantic precision), or ``None``.
        batch_size: reports encoded at once.

    Attributes:
        embeddings: ``(R, D)`` global report embeddings (after :meth:`encode`).
    """

    def __init__(
        self,
        ids: Sequence[str],
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        batch_size: int = 64,
    ) -> None:
        if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape or len(ids) != input_ids.shape[0]:
            raise ValueError(
                f"{len(ids)} ids need (R, T) input_ids and attention_mask of one shape, got "
                f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
            )
        if labels is not None and labels.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} reports with {labels.shape[0]} label rows")
        self.ids = list(ids)
        self.input_ids, self.attention_mask, self.labels = input_ids.long(), attention_mask.long(), labels
        self.batch_size = int(batch_size)
        self._embeddings: torch.Tensor | None = None

    @classmethod
    def from_items(
        cls, items: Sequence[Mapping[str, Any]], transforms: Callable[[dict], Mapping[str, Any]], batch_size: int = 64
    ) -> tuple[ReportBank | None, list[dict[str, str]]]:
        """Tokenise ``items`` (``{"id", "report"[, "labels"]}``) with ``transforms`` (the bundle's report transforms).

        Returns:
            The bank of the reports that could be read (``None`` when none could) and ``[{"report": id, "reason":
            ...}]`` for the others (the reason names no report text).
        """
        kept, tokens, errors = [], [], []
        for item in items:
            try:
                data = transforms({"report": item["report"], "id": item["id"]})
            except Exception as err:  # noqa: BLE001 - one unreadable report must not stop the others
                errors.append({"report": str(item["id"]), "reason": _reason(err)})
                logger.debug("report %s cannot be read", item["id"], exc_info=True)
                continue
            kept.append(item)
            tokens.append(data)
        if not kept:
            return None, errors
        labels = None
        if all(item.get("labels") is not None for item in kept):
            labels = torch.as_tensor([list(item["labels"]) for item in kept], dtype=torch.float32)
        bank = cls(
            [str(item["id"]) for item in kept],
            torch.stack([torch.as_tensor(t["input_ids"]) for t in tokens]),
            torch.stack([torch.as_tensor(t["attention_mask"]) for t in tokens]),
            labels,
            batch_size,
        )
        return bank, errors

    @property
    def embeddings(self) -> torch.Tensor:
        """``(R, D)`` report embeddings.

        Raises:
            RuntimeError: before :meth:`encode`.
        """
        if self._embeddings is None:
            raise RuntimeError("the report bank is not encoded yet: call encode(network, device) first")
        return self._embeddings

    def encode(self, network: torch.nn.Module, device: str | torch.device | None = None) -> torch.Tensor:
        """Encode the reports with ``network`` (a :class:`~sista_monai.networks.SISTAModel`, DDP unwrapped) once.

        Runs without gradient; the network's mode is left as it is (the evaluator puts it in eval mode).

        Returns:
            :attr:`embeddings`, on ``device``.
        """
        if self._embeddings is None:
            model: Any = getattr(network, "module", network)
            parts = []
            with torch.no_grad():
                for start in range(0, len(self.ids), self.batch_size):
                    chunk = slice(start, start + self.batch_size)
                    ids, mask = self.input_ids[chunk].to(device), self.attention_mask[chunk].to(device)
                    parts.append(model.encode_text(ids, mask)[0].float())
            self._embeddings = torch.cat(parts)
            logger.info("encoded %d reports of the report bank", len(self.ids))
        return self._embeddings.to(device) if device is not None else self._embeddings


class RetrievalInputs:
    """The images and the report bank of one retrieval run, in either mode (see the module docstring).

    Args:
        dataset_dir: a folder of images (retrieve mode), or ``None`` (evaluate mode).
        output_dir: the retrieve mode's output folder (``errors.json`` goes there).
        report_transforms: the report transforms (section extraction, cleaning, tokenisation) applied to
            ``{"report": text or file, "id": id}``.
        report_bank: the retrieve mode's bank (see :func:`report_bank_items`).
        report_bank_split: the bank datalist's split.
        evaluation_datalist: the evaluate mode's datalist (image, report, finding ``labels`` and ``id`` per item).
        evaluation_split: its split.
        batch_size: reports encoded at once.

    Attributes:
        evaluate: whether this is the evaluate mode.
        images: ``[{"image": path, "source": output name (retrieve) or item id (evaluate)}, ...]``.
        bank: the :class:`ReportBank`.
        errors: the unreadable inputs of the retrieve mode, as written to ``errors.json``: images as
            :class:`~sista_monai.data.inference.InferenceInputs` lists them (``{"file", "reason"}``), then reports
            (``{"report": id, "reason"}``).

    Raises:
        ValueError: the evaluate mode without ``evaluation_datalist``, a split item without image or report, a report
            of the evaluation split that cannot be read, or no readable image or report in the retrieve mode.
        FileNotFoundError: a missing folder or file.
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike | None,
        output_dir: str | os.PathLike,
        report_transforms: Callable[[dict], Mapping[str, Any]],
        report_bank: str | os.PathLike | None = None,
        report_bank_split: str = "test",
        evaluation_datalist: str | os.PathLike | None = None,
        evaluation_split: str = "test",
        batch_size: int = 64,
    ) -> None:
        self.evaluate = dataset_dir is None
        self.output_dir = Path(output_dir)
        self.errors: list[dict[str, str]] = []
        self._images: InferenceInputs | None = None
        if self.evaluate:
            self.images, bank = self._evaluation(evaluation_datalist, evaluation_split, report_transforms, batch_size)
        else:
            self.images, bank = self._retrieval(
                dataset_dir, report_bank, report_bank_split, report_transforms, batch_size
            )
        self.bank = bank

    @staticmethod
    def _evaluation(
        datalist: str | os.PathLike | None,
        split: str,
        transforms: Callable[[dict], Mapping[str, Any]],
        batch_size: int,
    ) -> tuple[list[dict[str, str]], ReportBank]:
        if datalist is None:
            raise ValueError("the retrieval evaluation needs evaluation_datalist (or give dataset_dir to retrieve)")
        items = load_datalist_split(datalist, split, path_keys=("image",))
        ids = [_item_id(item, split, index) for index, item in enumerate(items)]
        _unique(ids, f"{Path(datalist).name} split {split!r}")
        missing = [i for i, item in zip(ids, items, strict=True) if not item.get("image") or not item.get("report")]
        if missing:
            raise ValueError(f"{Path(datalist).name} split {split!r}: items without image or report: {missing[:5]}")
        reports = [
            {"id": i, "report": item["report"], "labels": item.get("labels")}
            for i, item in zip(ids, items, strict=True)
        ]
        bank, errors = ReportBank.from_items(reports, transforms, batch_size)
        if errors or bank is None:
            raise ValueError(f"{Path(datalist).name} split {split!r}: reports that cannot be read: {errors[:5]}")
        images = [{"image": str(item["image"]), "source": i} for i, item in zip(ids, items, strict=True)]
        logger.info("retrieval evaluation on %d image-report pairs of split %r", len(images), split)
        return images, bank

    def _retrieval(
        self,
        dataset_dir: str | os.PathLike | None,
        report_bank: str | os.PathLike | None,
        split: str,
        transforms: Callable[[dict], Mapping[str, Any]],
        batch_size: int,
    ) -> tuple[list[dict[str, str]], ReportBank]:
        if report_bank is None:
            raise ValueError("retrieval needs report_bank: a folder of .txt/.xml reports or a datalist JSON")
        inputs = InferenceInputs(str(dataset_dir), self.output_dir, name_key="source")
        self._images = inputs
        images = []
        for item in inputs.items:
            if item["source"] in RESERVED_NAMES:  # its extension keeps its file apart from the run's own files
                item = {**item, "source": Path(item["image"]).relative_to(inputs.folder).as_posix()}
            images.append(item)
        bank, report_errors = ReportBank.from_items(report_bank_items(report_bank, split), transforms, batch_size)
        self.errors = list(inputs.errors) + report_errors
        if report_errors:
            write_json(self.output_dir / ERRORS_FILE, self.errors)
            logger.error(
                "%d reports of the report bank cannot be read and are left out; each is listed in %s",
                len(report_errors),
                self.output_dir / ERRORS_FILE,
            )
        if bank is None:
            raise ValueError(f"none of the reports of report_bank {report_bank} can be read; see {ERRORS_FILE}")
        return images, bank

    def finish(self) -> None:
        """End the run with exit status 1 when an image or a report could not be read (after the outputs).

        Raises:
            SystemExit: with status 1 and a one-line message naming ``errors.json``.
        """
        if self.errors:
            raise SystemExit(
                f"retrieval finished for {len(self.images)} images and {len(self.bank.ids)} reports; "
                f"{len(self.errors)} inputs could not be read (see {self.output_dir / ERRORS_FILE})"
            )


class SISTARetrievalInferer:
    """MONAI-style inferer of retrieval: ``inferer(image, network)`` → image embeddings and their bank similarities.

    The bank is encoded with the same network on the first call (:meth:`ReportBank.encode`).

    Args:
        bank: the :class:`ReportBank`.
    """

    def __init__(self, bank: ReportBank) -> None:
        self.bank = bank

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module) -> dict[str, torch.Tensor]:
        """
        Args:
            inputs: ``(B, 1, W, H)`` images.
            network: a :class:`~sista_monai.networks.SISTAModel` (a DDP wrapper is unwrapped).

        Returns:
            ``{"image_emb": (B, D), "similarity": (B, R)}``: the cosine similarity of each image to each report.
        """
        model: Any = getattr(network, "module", network)
        image_emb = model.encode_image(inputs)[0]
        reports = self.bank.encode(network, image_emb.device)
        return {"image_emb": image_emb, "similarity": cosine_similarity(image_emb, reports)}
