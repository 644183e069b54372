"""The files of pretraining inference, written by handlers of its evaluator (``inference.json``).

For every image, ``<stem>.json`` holds the L2-normalised global image embedding (:class:`ImageEmbeddingWriter`).
When a report lies beside the image, ``<stem>_alignment.json`` holds, per word token, its position in the tokenised
report and its STA weights over the patch grid, and ``<stem>_word<NNN>.png`` draws each (``NNN``: the position)
(:class:`WordAlignmentWriter`).

Privacy: a report may still name a patient or a clinician ("Dr. X was notified"), so the text of the report is
neither logged nor written by default: a token's text is written only for the lung-location words of
:data:`~sista_monai.transforms.grounding.ZONE_WORDS` (``"right"``, ``"upper"``, ...), otherwise ``null``; the
caller, who holds the report, maps a position back to its word with the tokenizer. ``write_all_words=True``
writes every token's text, for reports known to be de-identified.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from monai.utils import IgniteInfo, min_version, optional_import
from PIL import Image

from sista_monai.io.files import atomic_write_bytes
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


def _stem(source: str) -> str:
    return Path(source).stem


class ImageEmbeddingWriter:
    """Write ``<output_dir>/<stem>.json`` = ``{"source", "embed_dim", "embedding"}`` for every image of each batch.

    Reads the evaluator output of :class:`~sista_monai.engines.SISTAAlignmentInferer` (``pred["image_emb"]``) and
    :class:`~sista_monai.engines.SISTAInferencePrepareBatch` (``label["source"]``).

    Args:
        output_dir: folder of the files (created).
    """

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        """Write after every iteration; log the count at the end."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self._log)

    def __call__(self, engine: Engine) -> None:
        output = cast(dict[str, Any], engine.state.output)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        embeddings = output["pred"]["image_emb"]
        for index, source in enumerate(output["label"]["source"]):
            record = {
                "source": source,
                "embed_dim": int(embeddings.shape[1]),
                "embedding": embeddings[index].cpu().tolist(),
            }
            path = self.output_dir / f"{_stem(source)}.json"
            self.written.append(atomic_write_bytes(path, (json.dumps(record) + "\n").encode()))

    def _log(self, engine: Engine) -> None:
        logger.info("embedded %d images into %s", len(self.written), self.output_dir)


class WordAlignmentWriter:
    """Write ``<stem>_alignment.json`` and one ``<stem>_word<NNN>.png`` per word for every image with a report.

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
        source = output["label"]["source"][index]
        stem = _stem(source)
        words = self.tokenizer.convert_ids_to_tokens(output["label"]["input_ids"][index].tolist())
        display = (image[0].float().cpu() * self.std + self.mean).numpy()
        alignment = []
        for j in torch.nonzero(word_mask).flatten().tolist():
            grid_weights = weights[j].float().reshape(1, 1, *grid)
            upsampled = F.interpolate(grid_weights, size=display.shape, mode="nearest")[0, 0].cpu().numpy()
            Image.fromarray(overlay_heatmap(display.T, upsampled.T)).save(self.output_dir / f"{stem}_word{j:03d}.png")
            token = words[j] if self.write_all_words or words[j] in ZONE_WORDS else None
            alignment.append({"index": j, "token": token, "weights": weights[j].cpu().reshape(grid).tolist()})
        payload = {"source": source, "patch_grid": list(grid), "layout": "(x = column, y = row)", "tokens": alignment}
        atomic_write_bytes(self.output_dir / f"{stem}_alignment.json", (json.dumps(payload) + "\n").encode())
