"""The files of pretraining inference, written by handlers of its evaluator (``inference.json``).

Both writers are of the family of :mod:`sista_monai.handlers.predictions` (one JSON per image, written atomically,
named by :func:`~sista_monai.data.inference.output_stem`: the input's path relative to ``dataset_dir``, subfolders
kept). For every image, ``<name>.json`` holds the L2-normalised image embedding in the joint image–report space
(:class:`ImageEmbeddingWriter`). When a report lies beside the image, ``<name>_alignment.json`` holds, per word
token, its position in the tokenised report and its STA weights over the patch grid, and ``<name>_word<NNN>.png``
draws each (``NNN``: the position) (:class:`WordAlignmentWriter`).

Privacy: a report may still name a patient or a clinician ("Dr. X was notified"), so the text of the report is
neither logged nor written by default: a token's text is written only for the lung-location words of
:data:`~sista_monai.transforms.grounding.ZONE_WORDS` (``"right"``, ``"upper"``, ...), otherwise ``null``; the
caller, who holds the report, maps a position back to its word with the tokenizer. ``write_all_words=True``
writes every token's text, for reports known to be de-identified.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from monai.utils import IgniteInfo, min_version, optional_import
from PIL import Image

from sista_monai.handlers.predictions import _PredictionWriter
from sista_monai.io.files import write_json
from sista_monai.transforms import load_tokenizer
from sista_monai.transforms.grounding import ZONE_WORDS
from sista_monai.visualize import overlay_heatmap

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["ImageEmbeddingWriter", "WordAlignmentWriter"]

logger = logging.getLogger(__name__)


class ImageEmbeddingWriter(_PredictionWriter):
    """Write ``<output_dir>/<name>.json`` = ``{"image", "space": "joint", "embed_dim", "embedding"}`` for every image.

    The fields of :class:`~sista_monai.handlers.EmbeddingJSONWriter` (the image-only inference), with ``space``
    telling the two apart: here the L2-normalised global embedding in the joint image–report space. Reads the
    evaluator output of :class:`~sista_monai.engines.SISTAAlignmentInferer` (``pred["image_emb"]``) and of
    :class:`~sista_monai.engines.SISTAInferencePrepareBatch` (``label["source"]``: the output names of
    :func:`~sista_monai.engines.pretrain_inference_items`; ``label["image_file"]``: the input file names).

    Args:
        output_dir: folder of the files (created).
        extra: further entries written to every file.
    """

    def __init__(self, output_dir: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(output_dir, None, "image", extra, None)

    def attach(self, engine: Engine) -> None:
        """Write after every iteration; log the count at the end."""
        super().attach(engine)
        engine.add_event_handler(Events.COMPLETED, self._log)

    def __call__(self, engine: Engine) -> None:
        output = cast(dict[str, Any], engine.state.output)
        embeddings = output["pred"]["image_emb"]
        names = output["label"]["source"]
        files = output["label"].get("image_file") or [Path(name).name for name in names]
        for index, name in enumerate(names):
            values = [float(v) for v in embeddings[index].float().cpu().tolist()]
            record = {"image": files[index], "space": "joint", "embed_dim": len(values), "embedding": values}
            self._write_as(name, record)

    def _log(self, engine: Engine) -> None:
        logger.info("embedded %d images into %s", len(self.written), self.output_dir)


class WordAlignmentWriter:
    """Write ``<name>_alignment.json`` and one ``<name>_word<NNN>.png`` per word for every image with a report.

    Reads the evaluator output of :class:`~sista_monai.engines.SISTAAlignmentInferer` (``pred["weights"]``,
    ``pred["word_mask"]``, ``pred["patch_grid"]``), the input image and ``label["source"]``/``label["input_ids"]``.
    Batches without reports are passed over.

    Args:
        output_dir: folder of the files (created).
        tokenizer: the tokenizer (object, folder or hub id) that produced the ids, to name the zone words.
        intensity_mean: normalisation mean (to display the image again).
        intensity_std: normalisation std.
        write_all_words: write the text of every report token, not only of the lung-location words (only
            for de-identified reports: a name in the report would be written too).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        tokenizer: Any,
        intensity_mean: float = 0.5,
        intensity_std: float = 0.25,
        write_all_words: bool = False,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.tokenizer = tokenizer
        self.mean, self.std = float(intensity_mean), float(intensity_std)
        self.write_all_words = write_all_words

    def attach(self, engine: Engine) -> None:
        """Write after every iteration."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        output = cast(dict[str, Any], engine.state.output)
        pred = output["pred"]
        if "weights" not in pred:
            return
        self.tokenizer = load_tokenizer(self.tokenizer)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        grid = tuple(pred["patch_grid"])
        for index in range(len(output["label"]["source"])):
            self._write(output["image"][index], pred["weights"][index], pred["word_mask"][index], grid, index, output)

    def _write(
        self,
        image: torch.Tensor,
        weights: torch.Tensor,
        word_mask: torch.Tensor,
        grid: tuple[int, ...],
        index: int,
        output: dict[str, Any],
    ) -> None:
        name = output["label"]["source"][index]
        files = output["label"].get("image_file")
        stem = self.output_dir / name
        stem.parent.mkdir(parents=True, exist_ok=True)
        words = self.tokenizer.convert_ids_to_tokens(output["label"]["input_ids"][index].tolist())
        display = (image[0].float().cpu() * self.std + self.mean).numpy()
        alignment = []
        for j in torch.nonzero(word_mask).flatten().tolist():
            grid_weights = weights[j].float().reshape(1, 1, *grid)
            upsampled = F.interpolate(grid_weights, size=display.shape, mode="nearest")[0, 0].cpu().numpy()
            Image.fromarray(overlay_heatmap(display.T, upsampled.T)).save(f"{stem}_word{j:03d}.png")
            token = words[j] if self.write_all_words or words[j] in ZONE_WORDS else None
            alignment.append({"index": j, "token": token, "weights": weights[j].cpu().reshape(grid).tolist()})
        payload = {
            "image": files[index] if files else Path(name).name,
            "patch_grid": list(grid),
            "layout": "(x = column, y = row)",
            "tokens": alignment,
        }
        write_json(f"{stem}_alignment.json", payload)
