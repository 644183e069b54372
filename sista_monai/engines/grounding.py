"""Phrase grounding with a pretrained SISTA model: image + free-text phrase → where in the image the phrase points.

The pretraining bundle's ``grounding.json`` (layered on ``train.json``) has two modes, chosen by ``dataset_dir``:

* ``dataset_dir`` **a folder of images** and ``--phrase`` — **ground**: every readable image
  (:class:`~sista_monai.data.inference.InferenceInputs`) goes through the bundle's ``inference_transforms`` and
  :class:`SISTAGroundingInferer`; :class:`~sista_monai.handlers.GroundingWriter` writes the heat map PNG and the
  JSON (weights over the patch grid, the best patch's box in original pixels).
* ``dataset_dir`` **null** (the default) — **evaluate**: :class:`CounterfactualEvaluation` scores the model on the
  counterfactual twins of a datalist with truth (``counterfactual#datalist``, the demo's by default) with the
  pretraining evaluation's own metric (:class:`~sista_monai.metrics.CounterfactualGrounding`) and writes
  ``eval/grounding.json``: the ``grounding.counterfactual`` block of ``eval/metrics.json``.

**The phrase's map** uses STA's word–patch alignment unchanged (:func:`~sista_monai.losses.alignment_weights`): the
phrase is cleaned and tokenised as reports are, encoded by the text encoder with its words' pieces averaged (as in
training), and every word gets STA's sparse weights over the patches (min–max normalised similarities, those below
``sparsity_threshold`` zeroed, renormalised to sum 1). The phrase's weights are the **mean of its words' weights**:
each word counts once, whatever its number of WordPiece pieces, and the result is again a distribution over the
patches (summing to 1), whose argmax is the patch the phrase points at (the first on a tie).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader

from sista_monai.data.datalist import load_datalist_split
from sista_monai.data.inference import InferenceInputs, phrase_slug
from sista_monai.io.files import write_json
from sista_monai.losses import alignment_weights
from sista_monai.metrics.counterfactual import CounterfactualGrounding
from sista_monai.metrics.pretraining import TARGETS, summarise_test_metrics
from sista_monai.transforms import CleanReport, ReportTokenizer

from .inference import SISTAInferencePrepareBatch

__all__ = [
    "CounterfactualEvaluation",
    "GroundingInputs",
    "GroundingPrepareBatch",
    "SISTAGroundingInferer",
    "phrase_tokens",
]

logger = logging.getLogger(__name__)

_TARGETS = ("counterfactual_follow_rate", "counterfactual_over_image_free")


class GroundingInputs:
    """The images of one grounding run: a folder's (ground mode) or none (evaluate mode, ``dataset_dir`` ``None``).

    Args:
        dataset_dir: the folder of images, or ``None``.
        output_dir: where the outputs and ``errors.json`` go.
        phrase: the phrase (required to ground; checked here, before any image is read).

    Attributes:
        evaluate: whether this is the evaluate mode.
        items: ``[{"image": path, "source": output name}, ...]`` of the readable images (none to evaluate).

    Raises:
        ValueError: grounding without a phrase, or a phrase without letter or digit.
    """

    def __init__(
        self, dataset_dir: str | os.PathLike | None, output_dir: str | os.PathLike, phrase: str | None
    ) -> None:
        self.evaluate = dataset_dir is None
        self._inputs: InferenceInputs | None = None
        self.items: list[dict[str, str]] = []
        if self.evaluate:
            return
        if phrase is None or not str(phrase).strip():
            raise ValueError('grounding the images of dataset_dir needs a phrase: --phrase "left pleural effusion"')
        phrase_slug(phrase)
        self._inputs = InferenceInputs(str(dataset_dir), output_dir, name_key="source")
        self.items = self._inputs.items

    def finish(self) -> None:
        """End with exit status 1 when an image could not be read (see :meth:`InferenceInputs.finish`)."""
        if self._inputs is not None:
            self._inputs.finish()


def phrase_tokens(phrase: str, tokenizer: Any, max_length: int = 112) -> dict[str, torch.Tensor]:
    """The phrase cleaned (:class:`~sista_monai.transforms.CleanReport`) and tokenised as reports are.

    Returns:
        :class:`~sista_monai.transforms.ReportTokenizer`'s ``input_ids``, ``attention_mask``, ``word_mask``,
        ``word_start`` (each ``(T,)``).

    Raises:
        ValueError: the phrase holds no word (only punctuation, or nothing left after cleaning).
    """
    tokens = ReportTokenizer(tokenizer, max_length=max_length)(CleanReport()(phrase, source="phrase"))
    first = tokens["word_mask"] & (tokens["word_start"] == torch.arange(len(tokens["word_start"])))
    if not bool(first.any()):
        raise ValueError(f"the grounding phrase {phrase!r} holds no word the tokenizer keeps")
    return {k: tokens[k] for k in ("input_ids", "attention_mask", "word_mask", "word_start")}


class GroundingPrepareBatch(SISTAInferencePrepareBatch):
    """:class:`SISTAInferencePrepareBatch` that also hands the writer each image's geometry from its MONAI metadata.

    ``targets`` gains ``path`` (the file), ``input_affine`` (the affine after the transforms), ``original_affine``
    (as loaded) and ``original_size`` (``(W, H)`` as loaded), one per image: the writer maps the patch grid back to
    the original pixels through them.

    Raises:
        ValueError: the image carries no MONAI metadata (a plain tensor).
    """

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> Any:
        image = batchdata["image"]
        meta = getattr(image, "meta", None)
        if meta is None or "original_affine" not in meta or "spatial_shape" not in meta:
            raise ValueError("grounding maps the patches back through the image's MONAI metadata; the batch has none")
        inputs, targets, args, text = super().__call__(batchdata, device, non_blocking, **kwargs)
        batch = image.shape[0]
        filenames = meta["filename_or_obj"]
        targets.update(
            {
                "path": [filenames] if isinstance(filenames, str) else list(filenames),
                "input_affine": torch.as_tensor(image.affine, dtype=torch.float64).cpu().reshape(batch, 4, 4),
                "original_affine": torch.as_tensor(meta["original_affine"], dtype=torch.float64).reshape(batch, 4, 4),
                "original_size": torch.as_tensor(np.asarray(meta["spatial_shape"])).reshape(batch, -1)[:, :2],
            }
        )
        return inputs, targets, args, text


class SISTAGroundingInferer:
    """MONAI-style inferer of phrase grounding: ``inferer(image, network)`` → the phrase's weights over the patches.

    Args:
        phrase: the phrase (``None`` only for a run that never calls the inferer: the evaluate mode).
        tokenizer: the bundle's tokenizer (object, folder or hub id).
        max_length: the token length.
        sparsity_threshold: ``sigma`` of STA (``None``: ``1 / P``).
    """

    def __init__(
        self, phrase: str | None, tokenizer: Any, max_length: int = 112, sparsity_threshold: float | None = None
    ) -> None:
        self.phrase = phrase
        self.sparsity_threshold = sparsity_threshold
        self.tokens = phrase_tokens(phrase, tokenizer, max_length) if phrase is not None else None

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module) -> dict[str, Any]:
        """
        Args:
            inputs: ``(B, 1, W, H)`` images.
            network: a :class:`~sista_monai.networks.SISTAModel` (a DDP wrapper is unwrapped).

        Returns:
            ``{"weights": (B, P)`` (the phrase's mean word weights), ``"word_weights": (B, N, P)`` (each word's),
            ``"patch_grid": (gx, gy), "words": N}``.

        Raises:
            ValueError: no phrase was given.
        """
        if self.tokens is None:
            raise ValueError("phrase grounding needs a phrase (--phrase)")
        model: Any = getattr(network, "module", network)
        _, patch_emb, grid = model.encode_image(inputs)
        batch = inputs.shape[0]
        text = [self.tokens[k].to(inputs.device)[None].expand(batch, -1) for k in self.tokens]
        _, token_emb, words = model.encode_text(*text)
        weights = alignment_weights(patch_emb, token_emb, self.sparsity_threshold)  # (B, T, P)
        positions = torch.nonzero(words[0]).flatten()
        word_weights = weights[:, positions]
        return {
            "weights": word_weights.mean(dim=1),
            "word_weights": word_weights,
            "patch_grid": tuple(grid),
            "words": len(positions),
        }


class CounterfactualEvaluation:
    """The evaluate mode of grounding: the pretraining test report's ``grounding.counterfactual`` block.

    Runs :class:`~sista_monai.metrics.CounterfactualGrounding` (the metric of ``train.json``'s test evaluator) on the
    counterfactual twins of ``datalist``/``split``, with the image-free prior and the text pointer fitted on the
    ``prior_split`` of ``prior_datalist``, and arranges its figures with
    :func:`~sista_monai.metrics.pretraining.summarise_test_metrics`. Nothing is read before :meth:`evaluate`, so the
    ground mode's config builds this object without the truth data.

    Args:
        network: the SISTA model.
        datalist: the counterfactual datalist (``datalist_counterfactual.json``).
        split: its split.
        dataset: ``dataset(data=items)`` → the twins' dataset (the config's ``counterfactual#transforms``).
        prior_datalist: the pretraining datalist.
        prior_dataset: ``prior_dataset(data=items)`` → the prior's dataset (``train.json``'s ``prior#dataset``).
        prior_split: the split the pointers are fitted on.
        batch_size: batch size of both loaders.
        num_workers: loader workers.
        class_names: the lesion class names (``sista_monai.transforms.LESION_CLASSES``).
        device: where the network runs.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        datalist: str | os.PathLike,
        split: str,
        dataset: Callable[..., Any],
        prior_datalist: str | os.PathLike,
        prior_dataset: Callable[..., Any],
        prior_split: str = "training",
        batch_size: int = 64,
        num_workers: int = 0,
        class_names: Sequence[str] = ("opacity", "pneumothorax", "effusion"),
        device: str | torch.device | None = None,
    ) -> None:
        self.network = network
        self.datalist, self.split, self.dataset = Path(datalist), split, dataset
        self.prior_datalist, self.prior_split, self.prior_dataset = Path(prior_datalist), prior_split, prior_dataset
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.class_names = tuple(class_names)
        self.device = device

    def _loader(self, dataset: Any) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)

    def evaluate(self) -> dict[str, Any]:
        """The report: ``split``, ``twins``, ``grounding.counterfactual`` (``follow_rate``, ``prior``,
        ``text_pointer``, ``trials``, ``per_finding``, ``split``) and ``measured``/``targets``/``targets_met`` of the
        two counterfactual targets.

        Raises:
            FileNotFoundError: no counterfactual datalist.
            ValueError: its split holds no twin.
        """
        if not self.datalist.is_file():
            raise FileNotFoundError(
                f"the grounding evaluation needs counterfactual twins with truth: {self.datalist} is missing "
                "(the demo data has them; give dataset_dir and --phrase to ground your own images)"
            )
        items = load_datalist_split(self.datalist, self.split, path_keys=("image", "twin_image"))
        if not items:
            raise ValueError(f"{self.datalist.name} has no twin in split {self.split!r}")
        prior_items = load_datalist_split(self.prior_datalist, self.prior_split)
        metric = CounterfactualGrounding(
            self.network,
            self._loader(self.dataset(data=items)),
            self._loader(self.prior_dataset(data=prior_items)),
            self.class_names,
            self.device,
        )
        figures = metric.compute()
        summary = summarise_test_metrics(figures, len(items), {"counterfactual": {"split": self.split}})
        block = summary["grounding"]["counterfactual"]
        measured = {k: summary["measured"][k] for k in _TARGETS}
        report: dict[str, Any] = {
            "split": self.split,
            "twins": len(items),
            "grounding": {"counterfactual": block},
            "measured": measured,
            "targets": {k: TARGETS[k] for k in _TARGETS},
            "targets_met": {k: summary["targets_met"][k] for k in _TARGETS},
        }
        logger.info(
            "counterfactual grounding on %s (%d twins, %d trials): follow rate %.3f (image-free prior %.3f, text "
            "pointer %.3f); over image-free %.2f",
            self.split,
            len(items),
            block["trials"],
            block["follow_rate"],
            block["prior"],
            block["text_pointer"],
            measured["counterfactual_over_image_free"],
        )
        return report

    def write(self, output_path: str | os.PathLike) -> dict[str, Any]:
        """:meth:`evaluate`, written to ``output_path`` (JSON, atomically); returns the report."""
        report = self.evaluate()
        write_json(output_path, report)
        return report
