"""Inference of the pretraining bundle: image → global embedding; image + report → word–patch heat maps.

For every DICOM/PNG/JPEG file in the input folder, ``<stem>.json`` holds the L2-normalised global image
embedding. When a report ``<stem>.txt`` (MIMIC-style text) or ``<stem>.xml`` (IU XML) lies beside the image,
the report's words are aligned with the image patches by the STA weights: ``<stem>_alignment.json`` holds,
per word token, its position in the tokenised report and the weights over the patch grid, and
``<stem>_word<NNN>.png`` draws each (``NNN``: the position).

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from sista_monai.data.tasks import image_files
from sista_monai.io import atomic_write_bytes
from sista_monai.losses import alignment_weights
from sista_monai.transforms import CleanReport, ExtractReportSections, ReportTokenizer, load_tokenizer
from sista_monai.transforms.grounding import ZONE_WORDS
from sista_monai.visualize import overlay_heatmap

__all__ = ["run_pretrain_inference"]

logger = logging.getLogger(__name__)


def run_pretrain_inference(
    network: torch.nn.Module,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    image_transform: Callable[[dict[str, Any]], dict[str, Any]],
    tokenizer: str | os.PathLike | Any,
    max_length: int = 112,
    sparsity_threshold: float | None = None,
    intensity_mean: float = 0.5,
    intensity_std: float = 0.25,
    device: str | torch.device = "cpu",
    write_all_words: bool = False,
) -> list[Path]:
    """Embed every image of ``input_dir`` and align it with its report when one is present.

    Args:
        network: a trained :class:`~sista_monai.networks.SISTAModel`.
        input_dir: folder of images (and optional ``<stem>.txt``/``<stem>.xml`` reports).
        output_dir: where the JSON and PNG files go.
        image_transform: dictionary transform from ``{"image": path}`` to the network input.
        tokenizer: tokenizer folder, hub id or object.
        max_length: report token length.
        sparsity_threshold: σ of STA (``None``: 1/P).
        intensity_mean: normalisation mean (to display the image again).
        intensity_std: normalisation std.
        device: where to run.
        write_all_words: write the text of every report token, not only of the lung-location words (only
            for de-identified reports: a name in the report would be written too).

    Returns:
        The files written.
    """
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    network = getattr(network, "module", network).to(device).eval()
    tokenizer = load_tokenizer(tokenizer)
    report_tokenizer = ReportTokenizer(tokenizer, max_length=max_length)
    extract, clean = ExtractReportSections("auto"), CleanReport()
    written: list[Path] = []
    files = image_files(input_dir)
    with torch.no_grad():
        for path in files:
            image = image_transform({"image": str(path)})["image"].unsqueeze(0).to(device)
            image_emb, patch_emb, grid = network.encode_image(image)
            record = {
                "source": path.name,
                "embed_dim": int(image_emb.shape[1]),
                "embedding": image_emb[0].cpu().tolist(),
            }
            written.append(atomic_write_bytes(output / f"{path.stem}.json", (json.dumps(record) + "\n").encode()))
            report = next((path.with_suffix(s) for s in (".txt", ".xml") if path.with_suffix(s).is_file()), None)
            if report is None:
                continue
            tokens = report_tokenizer(clean(extract(report, source=report.name), source=report.name))
            _, token_emb, word_mask = network.encode_text(
                tokens["input_ids"][None].to(device),
                tokens["attention_mask"][None].to(device),
                tokens["word_mask"][None].to(device),
                tokens["word_start"][None].to(device),
            )
            weights = alignment_weights(patch_emb, token_emb, sparsity_threshold)[0]
            words = tokenizer.convert_ids_to_tokens(tokens["input_ids"].tolist())
            display = (image[0, 0].float().cpu() * intensity_std + intensity_mean).numpy()
            alignment = []
            for j in torch.nonzero(word_mask[0]).flatten().tolist():
                grid_weights = weights[j].float().reshape(1, 1, *grid)
                upsampled = F.interpolate(grid_weights, size=display.shape, mode="nearest")[0, 0].cpu().numpy()
                png = output / f"{path.stem}_word{j:03d}.png"
                Image.fromarray(overlay_heatmap(display.T, upsampled.T)).save(png)
                written.append(png)
                token = words[j] if write_all_words or words[j] in ZONE_WORDS else None
                alignment.append({"index": j, "token": token, "weights": weights[j].cpu().reshape(grid).tolist()})
            payload = {
                "source": path.name,
                "patch_grid": list(grid),
                "layout": "(x = column, y = row)",
                "tokens": alignment,
            }
            written.append(
                atomic_write_bytes(output / f"{path.stem}_alignment.json", (json.dumps(payload) + "\n").encode())
            )
    logger.info("embedded %d images into %s", len(files), output)
    return written
