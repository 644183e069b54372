"""Zero-shot classification with the pretrained SISTA model: images scored against prompt sentences, no training.

As CheXzero (Tiu et al. 2022, https://doi.org/10.1038/s41551-022-00936-9) does with positive/negative prompt pairs:
every prompt of a :class:`~sista_monai.data.prompts.PromptSet` is embedded once with the model's text encoder
(:func:`prompt_embeddings`, tokenised through the bundle's report cleaning and tokenizer); the L2-normalised
embeddings are averaged per class and polarity and normalised again; an image's probability of a class is the
softmax over its cosine similarities to the class's positive and negative means divided by a temperature
(:func:`zero_shot_probabilities`)::

    p(class | image) = exp(s_pos / tau) / (exp(s_pos / tau) + exp(s_neg / tau))

``tau`` is the model's learned SIA temperature when it has one, otherwise the fixed SIA temperature it was trained
with (the bundle's ``sia_temperature``): the image–report logits were trained at that scale. CheXzero uses
``tau = 1``; the ranking of images, hence every AUROC, does not depend on ``tau`` (``p`` is increasing in
``s_pos - s_neg``), only the calibration of the probabilities does.

The pretraining bundle's ``zero_shot.json`` runs this in MONAI's :class:`~monai.engines.SupervisedEvaluator`:
:class:`ZeroShotInputs` lists the images (a folder, or a datalist's test split with its labels),
:class:`ZeroShotPrepareBatch` prepares the batches, :class:`ZeroShotInferer` scores them, and the handlers of
:mod:`sista_monai.handlers.zero_shot` write the files.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.engines.utils import PrepareBatch

from sista_monai.data.datalist import load_datalist_split
from sista_monai.data.inference import InferenceInputs, output_stem
from sista_monai.data.prompts import POLARITIES, PromptSet

__all__ = [
    "ZERO_SHOT_MODES",
    "ZeroShotInferer",
    "ZeroShotInputs",
    "ZeroShotPrepareBatch",
    "prompt_embeddings",
    "zero_shot_mode",
    "zero_shot_probabilities",
]

logger = logging.getLogger(__name__)

ZERO_SHOT_MODES = ("evaluate", "infer")
"""``evaluate``: score a datalist split and measure AUROC against its labels; ``infer``: score a folder of images."""


def zero_shot_mode(mode: str | None, datalist: str | os.PathLike | None) -> str:
    """The mode of a zero-shot run: ``mode`` as given, or, with ``None``, ``"evaluate"`` when ``datalist`` exists.

    Raises:
        ValueError: an unknown mode.
        FileNotFoundError: ``"evaluate"`` without a datalist file.
    """
    exists = datalist is not None and Path(datalist).is_file()
    if mode is None or str(mode).lower() in ("", "none", "null", "auto"):
        return "evaluate" if exists else "infer"
    mode = str(mode).lower()
    if mode not in ZERO_SHOT_MODES:
        raise ValueError(f"zero_shot_mode must be one of {ZERO_SHOT_MODES} or null (automatic), got {mode!r}")
    if mode == "evaluate" and not exists:
        raise FileNotFoundError(f"zero_shot_mode 'evaluate' needs the datalist {datalist}, which does not exist")
    return mode


class ZeroShotInputs:
    """The images of a zero-shot run, with their output names and, when evaluating, their labels.

    * ``infer``: every DICOM/PNG/JPEG under ``dataset_dir`` through
      :class:`~sista_monai.data.inference.InferenceInputs` (DICOM found by content, nested folders, unreadable files
      listed in ``<output_dir>/errors.json``; :meth:`finish` then ends the run with exit status 1).
    * ``evaluate``: the ``split`` items of ``datalist`` with their ``labels`` vectors (aligned with the datalist's
      ``label_names``). Only the image path and the labels are kept: the report text never enters the run.

    Args:
        dataset_dir: the folder of images (``infer``).
        output_dir: where the outputs (and ``errors.json``) go.
        datalist: the datalist (``evaluate``).
        mode: ``"evaluate"``, ``"infer"`` or ``None`` (:func:`zero_shot_mode`).
        split: the datalist split evaluated.

    Attributes:
        mode: the resolved mode.
        items: ``[{"image": path, "source": path relative to the input folder, "output_name": name, "labels":
            float32 array (evaluate only)}]``.
        label_names: the datalist's ``label_names`` (``None`` in ``infer`` mode).
        split: the split evaluated (``None`` in ``infer`` mode).

    Raises:
        ValueError: (evaluate) the datalist has no ``label_names``, or an item's labels do not match them.
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        datalist: str | os.PathLike | None = None,
        mode: str | None = None,
        split: str = "test",
    ) -> None:
        self.mode = zero_shot_mode(mode, datalist)
        self.label_names: list[str] | None = None
        self.split: str | None = None
        self._inputs: InferenceInputs | None = None
        if self.mode == "infer":
            self._inputs = InferenceInputs(dataset_dir, output_dir)
            folder = Path(dataset_dir)
            self.items: list[dict[str, Any]] = [
                {**item, "source": Path(item["image"]).relative_to(folder).as_posix()} for item in self._inputs.items
            ]
            return
        path = Path(str(datalist))
        label_names = json.loads(path.read_text(encoding="utf-8")).get("label_names")
        if not isinstance(label_names, list) or not label_names:
            raise ValueError(f"{path}: zero-shot evaluation needs the datalist's 'label_names' (the labels' classes)")
        self.label_names, self.split = [str(name) for name in label_names], split
        self.items = []
        for index, item in enumerate(load_datalist_split(path, split, path_keys=("image",))):
            labels = item.get("labels")
            if not isinstance(labels, list) or len(labels) != len(label_names):
                raise ValueError(
                    f"{path}: {split} item {item.get('id', index)!r} needs 'labels', a list of {len(label_names)} "
                    f"values aligned with label_names"
                )
            image = Path(item["image"])
            source = image.relative_to(path.parent).as_posix() if image.is_relative_to(path.parent) else image.name
            self.items.append(
                {
                    "image": str(image),
                    "source": source,
                    "output_name": output_stem(image, path.parent),
                    "labels": np.asarray(labels, dtype=np.float32),
                }
            )

    def finish(self) -> None:
        """End an ``infer`` run with exit status 1 when an input could not be read (after its outputs were written).

        Raises:
            SystemExit: see :meth:`~sista_monai.data.inference.InferenceInputs.finish`.
        """
        if self._inputs is not None:
            self._inputs.finish()


@torch.no_grad()
def prompt_embeddings(
    model: torch.nn.Module,
    prompts: PromptSet,
    text_transform: Callable[[dict[str, Any]], Mapping[str, Any]],
    device: str | torch.device | None = None,
    text_key: str = "report",
) -> torch.Tensor:
    """The ``(C, 2, D)`` class embeddings: per class, the normalised mean of its positive and of its negative prompts.

    Args:
        model: a :class:`~sista_monai.networks.SISTAModel` (a DDP wrapper is unwrapped).
        prompts: the prompt set (``C`` classes).
        text_transform: maps ``{text_key: sentence}`` to a dict with ``input_ids`` and ``attention_mask`` (the bundle's
            report cleaning and tokenisation).
        device: where the embeddings are computed (default: the model's).
        text_key: the key of the sentence for ``text_transform``.

    Returns:
        Unit vectors; ``[:, 0]`` positive, ``[:, 1]`` negative (:data:`~sista_monai.data.prompts.POLARITIES`).
    """
    module: Any = getattr(model, "module", model)
    if device is None:
        device = next(module.parameters()).device
    sentences, groups = [], []
    for c, class_prompts in enumerate(prompts.classes.values()):
        for p, polarity in enumerate(POLARITIES):
            for sentence in getattr(class_prompts, polarity):
                sentences.append(sentence)
                groups.append(2 * c + p)
    tokens = [text_transform({text_key: sentence}) for sentence in sentences]
    input_ids = torch.stack([torch.as_tensor(t["input_ids"]) for t in tokens]).to(device)
    attention_mask = torch.stack([torch.as_tensor(t["attention_mask"]) for t in tokens]).to(device)
    text_emb = F.normalize(module.encode_text(input_ids, attention_mask)[0].float(), dim=-1)
    sums = torch.zeros(2 * len(prompts.classes), text_emb.shape[1], device=text_emb.device)
    sums.index_add_(0, torch.as_tensor(groups, device=text_emb.device), text_emb)
    return F.normalize(sums, dim=-1).reshape(len(prompts.classes), 2, -1)


def zero_shot_probabilities(
    image_emb: torch.Tensor, class_emb: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities of every class for every image: softmax over (positive, negative) cosine similarities / ``tau``.

    Args:
        image_emb: ``(B, D)`` image embeddings (normalised here).
        class_emb: ``(C, 2, D)`` unit class embeddings (:func:`prompt_embeddings`).
        temperature: ``tau > 0``.

    Returns:
        ``(probabilities (B, C), similarities (B, C, 2))``.

    Raises:
        ValueError: shapes that do not fit, or ``tau <= 0``.
    """
    if image_emb.ndim != 2 or class_emb.ndim != 3 or class_emb.shape[1] != 2:
        raise ValueError(
            f"expected image embeddings (B, D) and class embeddings (C, 2, D), got {tuple(image_emb.shape)} and "
            f"{tuple(class_emb.shape)}"
        )
    if image_emb.shape[1] != class_emb.shape[2]:
        raise ValueError(f"image embeddings have D={image_emb.shape[1]}, class embeddings D={class_emb.shape[2]}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    similarities = torch.einsum("bd,cpd->bcp", F.normalize(image_emb.float(), dim=-1), class_emb.float())
    return torch.softmax(similarities / temperature, dim=-1)[..., 0], similarities


class ZeroShotPrepareBatch(PrepareBatch):
    """Prepare a zero-shot batch for :class:`~monai.engines.SupervisedEvaluator`: ``(image, targets, (), {})``.

    ``targets`` holds ``source`` and ``output_name`` (lists of strings) and, when the batch has them, ``labels``
    ``(B, L)`` (float, on the CPU).
    """

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> Any:
        image = torch.as_tensor(batchdata["image"]).to(device=device, non_blocking=non_blocking, **kwargs)
        targets: dict[str, Any] = {"source": list(batchdata["source"]), "output_name": list(batchdata["output_name"])}
        if batchdata.get("labels") is not None:
            targets["labels"] = torch.as_tensor(batchdata["labels"], dtype=torch.float32).cpu()
        return image, targets, (), {}


class ZeroShotInferer:
    """MONAI-style inferer of zero-shot classification: ``inferer(image, network)`` → class probabilities.

    The prompts are embedded at the first call (after the bundle's ``initialize`` loaded the weights) and again only
    for another network.

    Args:
        prompts: the classes and their prompts.
        text_transform: the bundle's report cleaning and tokenisation, ``{"report": text}`` → ``input_ids``,
            ``attention_mask`` (see :func:`prompt_embeddings`).
        temperature: ``tau`` when the model has no learned temperature (the SIA temperature it was trained with).

    Raises:
        ValueError: ``temperature <= 0``.
    """

    def __init__(
        self,
        prompts: PromptSet,
        text_transform: Callable[[dict[str, Any]], Mapping[str, Any]],
        temperature: float = 0.07,
    ) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.prompts = prompts
        self.text_transform = text_transform
        self.temperature = float(temperature)
        self._class_emb: torch.Tensor | None = None
        self._network_id: int | None = None

    def model_temperature(self, network: torch.nn.Module) -> float:
        """``tau``: the model's learned temperature when it has one, otherwise :attr:`temperature`."""
        learned = getattr(getattr(network, "module", network), "temperature", None)
        return float(learned().detach()) if callable(learned) else self.temperature

    def class_embeddings(self, network: torch.nn.Module, device: str | torch.device | None = None) -> torch.Tensor:
        """The ``(C, 2, D)`` prompt embeddings of ``network`` (computed once per network)."""
        if self._class_emb is None or self._network_id != id(network):
            self._class_emb = prompt_embeddings(network, self.prompts, self.text_transform, device)
            self._network_id = id(network)
        return self._class_emb

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module) -> dict[str, Any]:
        """
        Args:
            inputs: ``(B, 1, W, H)`` images.
            network: a :class:`~sista_monai.networks.SISTAModel` (a DDP wrapper is unwrapped).

        Returns:
            ``{"probabilities": (B, C), "similarities": (B, C, 2), "classes": [C names], "temperature": tau}``.
        """
        model: Any = getattr(network, "module", network)
        image_emb = model.encode_image(inputs)[0]
        class_emb = self.class_embeddings(network, inputs.device)
        temperature = self.model_temperature(network)
        probabilities, similarities = zero_shot_probabilities(image_emb, class_emb, temperature)
        return {
            "probabilities": probabilities,
            "similarities": similarities,
            "classes": self.prompts.class_names,
            "temperature": temperature,
        }
