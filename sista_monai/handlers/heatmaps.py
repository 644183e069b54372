"""Word → patch alignment heat maps of a few evaluation pairs, written as PNG.

For each pair, the zone words (``right``, ``lower``, ``apical``...) and lesion words (``opacity``,
``pneumothorax``, ``effusion``...) of its report, the words the two pointing games test, are drawn as the STA
alignment weights ``a_jk`` over the image, upsampled from the patch grid. Only these fixed vocabularies are ever
used in file names, and files are numbered, not named after the study: no report text and no identifier
reaches the output folder. PNGs carry no text chunks.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from monai.utils import CommonKeys as Keys
from monai.utils import IgniteInfo, min_version, optional_import
from PIL import Image

from sista_monai.distributed import is_main_process
from sista_monai.losses import alignment_weights
from sista_monai.transforms import load_tokenizer
from sista_monai.transforms.grounding import LESION_WORDS, ZONE_WORDS
from sista_monai.visualize import overlay_heatmap

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["AlignmentHeatmaps"]

logger = logging.getLogger(__name__)

_LESION_NAMES = frozenset(w for words in LESION_WORDS.values() for w in words)


def _shown_words(batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The words drawn: zone words and lesion words (first pieces), ``None`` when the batch marks neither."""
    masks = [batch["pointing_mask"].bool()] if "pointing_mask" in batch else []
    if "lesion_word" in batch:
        masks.append(batch["lesion_word"] >= 0)
    if not masks:
        return None
    return masks[0] if len(masks) == 1 else masks[0] | masks[1]


class AlignmentHeatmaps:
    """Render the STA alignment of zone and lesion words for the first ``n_pairs`` pairs that have any.

    An evaluator handler (rank 0 only): attached to the pretraining bundle's test evaluator, it reads each
    iteration's output as that evaluator leaves it (``decollate=False``; :class:`~sista_monai.engines.SISTAPrepareBatch`
    with ``as_supervised=True``): the normalised images under ``image``, the targets (``input_ids``,
    ``pointing_mask``, ``lesion_word``) under ``label`` and the :class:`~sista_monai.networks.SISTAOutput` under
    ``pred``. No second pass of the network.

    Args:
        output_dir: folder for the PNGs.
        tokenizer: the tokenizer (folder, hub id or object) that produced the ids, to name the words.
        sparsity_threshold: σ of the STA loss (``None``: 1/P).
        intensity_mean: mean subtracted from the images (to display them again).
        intensity_std: divisor applied to the images.
        n_pairs: how many pairs.
        max_words: zone words drawn per pair.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        tokenizer: Any = None,
        sparsity_threshold: float | None = None,
        intensity_mean: float = 0.5,
        intensity_std: float = 0.25,
        n_pairs: int = 4,
        max_words: int = 3,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.tokenizer = tokenizer
        self.sparsity_threshold = sparsity_threshold
        self.mean, self.std = float(intensity_mean), float(intensity_std)
        self.n_pairs, self.max_words = int(n_pairs), int(max_words)
        self.written: list[Path] = []
        self.pairs = 0

    def _token_names(self) -> Any:
        if self.tokenizer is None:
            return None
        self.tokenizer = load_tokenizer(self.tokenizer)
        return self.tokenizer

    def attach(self, engine: Engine) -> None:
        """Register on rank 0 only: reset at each run, draw after each iteration until ``n_pairs`` are done."""
        if not is_main_process():
            return
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self.log)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the PNGs of an earlier run (the files stay)."""
        self.written, self.pairs = [], 0

    def __call__(self, engine: Engine) -> None:
        """Draw the iteration's pairs that mark zone or lesion words, until ``n_pairs`` pairs are drawn."""
        if self.pairs >= self.n_pairs:
            return
        output: Any = engine.state.output
        targets, out = output[Keys.LABEL], output[Keys.PRED]
        shown = _shown_words(targets)
        if shown is None or not shown.any():
            return
        batch = {"image": output[Keys.IMAGE], "input_ids": targets["input_ids"]}
        tokenizer = self._token_names()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():  # local: no collective
            weights = alignment_weights(out.patch_emb, out.token_emb, self.sparsity_threshold)
        for index in range(len(batch["image"])):
            tokens = torch.nonzero(shown[index]).flatten()[: self.max_words].tolist()
            if not tokens or self.pairs >= self.n_pairs:
                continue
            self.written += self._render(batch, weights[index], out.patch_grid, index, tokens, tokenizer, self.pairs)
            self.pairs += 1

    def log(self, engine: Engine | None = None) -> None:
        """One line: how many heat maps of how many pairs, and where."""
        logger.info("wrote %d alignment heat maps of %d pairs to %s", len(self.written), self.pairs, self.output_dir)

    def _render(
        self,
        batch: dict[str, torch.Tensor],
        weights: torch.Tensor,
        grid: tuple[int, int],
        index: int,
        tokens: list[int],
        tokenizer: Any,
        pair: int,
    ) -> list[Path]:
        image = (batch["image"][index, 0].float().cpu() * self.std + self.mean).numpy()
        paths = []
        for token in tokens:
            word = "word"
            if tokenizer is not None:
                name = tokenizer.convert_ids_to_tokens(int(batch["input_ids"][index, token]))
                word = name if name in ZONE_WORDS or name in _LESION_NAMES else "word"
            grid_weights = weights[token].float().reshape(1, 1, *grid)
            upsampled = F.interpolate(grid_weights, size=image.shape, mode="nearest")[0, 0].cpu().numpy()
            rgb = overlay_heatmap(image.T, upsampled.T)  # (W, H) layout -> (rows, cols) for display
            path = self.output_dir / f"pair{pair:02d}_token{token:03d}_{word}.png"
            Image.fromarray(rgb).save(path)
            paths.append(path)
        return paths
