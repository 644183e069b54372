"""One iteration of pretraining inference: image → global embedding; image + report → word–patch alignment weights.

The pretraining bundle's ``inference.json`` has the standard MONAI inference layout: :func:`pretrain_inference_items`
lists the input folder, a Dataset applies the image transforms and the configured report transforms (parser,
sections, tokenizer), a DataLoader feeds MONAI's :class:`~monai.engines.SupervisedEvaluator` whose
``prepare_batch`` is :class:`SISTAInferencePrepareBatch` and whose ``inferer`` is :class:`SISTAAlignmentInferer`,
and two handlers write the files (:class:`~sista_monai.handlers.ImageEmbeddingWriter`,
:class:`~sista_monai.handlers.WordAlignmentWriter`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from monai.engines.utils import PrepareBatch

from sista_monai.data.inference import InferenceInputs, find_images, output_stem
from sista_monai.losses import alignment_weights

__all__ = ["REPORT_SUFFIXES", "SISTAAlignmentInferer", "SISTAInferencePrepareBatch", "pretrain_inference_items"]

REPORT_SUFFIXES = (".txt", ".xml")
"""The report files looked for beside an image ``<stem>.<image suffix>``, in this order."""

TEXT_KEYS = ("input_ids", "attention_mask", "word_mask", "word_start")


def pretrain_inference_items(inputs: InferenceInputs | str | os.PathLike) -> list[dict[str, str]]:
    """The items of pretraining inference: every readable image of the run with its report, if one lies beside it.

    Args:
        inputs: the run's :class:`~sista_monai.data.inference.InferenceInputs` (what the bundle configs pass: DICOM
            found by content, subfolders, unreadable files left out and listed in ``errors.json``), or a folder
            (its images found by :func:`~sista_monai.data.inference.find_images`, none decoded beforehand).
            A report is ``<stem>.txt`` (MIMIC-style text) or ``<stem>.xml`` (IU XML) beside the image.

    Returns:
        ``[{"image": path, "source": output name, "image_file": file name, "report": report path (only when one
        lies beside the image)}]`` in the inputs' order; the output name is
        :func:`~sista_monai.data.inference.output_stem` (the path relative to the folder, subfolders kept), as
        for every bundle's inference.
    """
    if isinstance(inputs, InferenceInputs):
        found = [(Path(item["image"]), item["output_name"]) for item in inputs.items]
    else:
        folder = Path(inputs)
        found = [(path, output_stem(path, folder)) for path in find_images(folder)]
    items = []
    for path, name in found:
        item = {"image": str(path), "source": name, "image_file": path.name}
        report = next((path.with_suffix(s) for s in REPORT_SUFFIXES if path.with_suffix(s).is_file()), None)
        if report is not None:
            item["report"] = str(report)
        items.append(item)
    return items


class SISTAInferencePrepareBatch(PrepareBatch):
    """Prepare a pretraining-inference batch for :class:`~monai.engines.SupervisedEvaluator`.

    Returns ``(image, targets, (), text)``: ``targets`` holds ``source`` (the output names), ``image_file`` (the
    input file names, when the items have them) and, for a batch with
    reports, ``input_ids`` (to name the words); ``text`` holds the tokenised reports as keyword arguments of
    :class:`SISTAAlignmentInferer` (empty when the batch has no report).
    """

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> Any:
        image = torch.as_tensor(batchdata["image"]).to(device=device, non_blocking=non_blocking, **kwargs)
        text = {
            key: torch.as_tensor(batchdata[key]).to(device=device, non_blocking=non_blocking, **kwargs)
            for key in TEXT_KEYS
            if batchdata.get(key) is not None
        }
        if "word_mask" in text:
            text["word_mask"] = text["word_mask"].bool()
        targets: dict[str, Any] = {"source": list(batchdata["source"])}
        if batchdata.get("image_file") is not None:
            targets["image_file"] = list(batchdata["image_file"])
        if "input_ids" in text:
            targets["input_ids"] = text["input_ids"]
        return image, targets, (), text


class SISTAAlignmentInferer:
    """MONAI-style inferer of pretraining inference: ``inferer(image, network, **text)``.

    Encodes the images; when reports are given, also the reports, and returns their STA alignment weights
    (:func:`~sista_monai.losses.alignment_weights`, local: no collective).

    Args:
        sparsity_threshold: ``sigma`` of STA (``None``: ``1 / P``).
    """

    def __init__(self, sparsity_threshold: float | None = None) -> None:
        self.sparsity_threshold = sparsity_threshold

    def __call__(
        self,
        inputs: torch.Tensor,
        network: torch.nn.Module,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        word_mask: torch.Tensor | None = None,
        word_start: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """
        Args:
            inputs: ``(B, 1, W, H)`` images.
            network: a :class:`~sista_monai.networks.SISTAModel` (a DDP wrapper is unwrapped).
            input_ids, attention_mask, word_mask, word_start: the tokenised reports (``None``: images only).

        Returns:
            ``{"image_emb": (B, D), "patch_grid": (gx, gy)}`` and, with reports, ``"weights"`` ``(B, T, P)`` and
            ``"word_mask"`` ``(B, T)`` (first pieces of the words with ``word_start``).
        """
        model: Any = getattr(network, "module", network)
        image_emb, patch_emb, grid = model.encode_image(inputs)
        output: dict[str, Any] = {"image_emb": image_emb, "patch_grid": tuple(grid)}
        if input_ids is None or attention_mask is None:
            return output
        _, token_emb, token_mask = model.encode_text(input_ids, attention_mask, word_mask, word_start)
        output["weights"] = alignment_weights(patch_emb, token_emb, self.sparsity_threshold)
        output["word_mask"] = token_mask
        return output
