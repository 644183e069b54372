"""The files of phrase grounding (``configs/grounding.json``), written by a handler of its image evaluator.

For every image and the phrase given with ``--phrase`` (:class:`~sista_monai.engines.SISTAGroundingInferer`: the
phrase's words' STA weights over the patch grid, averaged over the words), :class:`GroundingWriter` writes

* ``<stem>_grounding_<slug>.png``: the heat map over the whole original image (display-normalised, as the bundle's
  loader reads it), the best patch outlined; the slug is :func:`~sista_monai.data.inference.phrase_slug` of the
  phrase. Nothing else is drawn: no text, no header value;
* ``<stem>_grounding.json``: the phrase, the number of words pooled, the weights over the patch grid, the best
  patch and its box ``[x0, y0, x1, y1]`` in the original image's pixels.

Both names come from :func:`~sista_monai.data.inference.grounding_file_names`.

Geometry: the network sees the image after the bundle's Resize/Pad/Crop (``inference_transforms``). MONAI records each
of them in the image's affine, so ``inv(original_affine) @ affine`` maps the network input's voxel indices to the
original image's (:func:`input_to_original`); the box is the best patch's corners mapped through it (pixel edges: a
pixel ``i`` covers ``[i, i + 1)``), clipped to the image, ``x`` the column and ``y`` the row, ``x1``/``y1`` exclusive.
The heat map is resampled onto the original pixel grid by MONAI's :class:`~monai.transforms.SpatialResample` from the
same two affines (nearest neighbour: a pixel whose centre lies in the box shows the best patch's weight).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import SpatialResample
from monai.utils import IgniteInfo, min_version, optional_import
from PIL import Image, ImageDraw

from sista_monai.data.inference import grounding_file_names
from sista_monai.handlers.predictions import _PredictionWriter
from sista_monai.io.files import atomic_write_bytes
from sista_monai.transforms import LoadChestXray
from sista_monai.visualize import overlay_heatmap

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = [
    "BOX_COLOUR",
    "GroundingWriter",
    "input_to_original",
    "original_heatmap",
    "patch_box",
]

logger = logging.getLogger(__name__)

BOX_COLOUR = (0, 255, 255)
"""The outline of the best patch on the heat map (cyan, apart from the map's red–yellow)."""


def input_to_original(
    input_affine: torch.Tensor | np.ndarray, original_affine: torch.Tensor | np.ndarray
) -> np.ndarray:
    """The ``3 x 3`` homogeneous map from network-input voxel indices to original-image voxel indices (2-D).

    Args:
        input_affine: the ``4 x 4`` affine of the image after the transforms (MetaTensor ``affine``).
        original_affine: the ``4 x 4`` affine as loaded (meta ``original_affine``).
    """
    full = np.linalg.solve(np.asarray(original_affine, dtype=np.float64), np.asarray(input_affine, dtype=np.float64))
    return full[np.ix_([0, 1, 3], [0, 1, 3])]


def patch_box(
    patch: tuple[int, int],
    patch_grid: tuple[int, int],
    input_size: tuple[int, int],
    to_original: np.ndarray,
    original_size: tuple[int, int],
) -> list[float]:
    """The box of one patch in the original image's pixels: ``[x0, y0, x1, y1]`` (see the module docstring).

    Args:
        patch: ``(column, row)`` index of the patch in the grid.
        patch_grid: ``(columns, rows)`` of the grid.
        input_size: ``(W, H)`` of the network input.
        to_original: :func:`input_to_original`.
        original_size: ``(W, H)`` of the original image.

    Returns:
        The box, clipped to the image (a patch that lies in the padding gets a box of zero width or height),
        rounded to 1/10000 pixel.
    """
    size = [input_size[axis] / patch_grid[axis] for axis in (0, 1)]
    low = [patch[axis] * size[axis] for axis in (0, 1)]
    corners = np.array(
        [[x, y, 1.0] for x in (low[0], low[0] + size[0]) for y in (low[1], low[1] + size[1])], dtype=np.float64
    )
    corners[:, :2] -= 0.5  # pixel edges -> voxel-centre coordinates, in which MONAI's affines are written
    mapped = (to_original @ corners.T).T[:, :2] + 0.5
    limits = np.asarray(original_size, dtype=np.float64)
    low_corner = np.clip(mapped.min(axis=0), 0.0, limits)
    high_corner = np.clip(mapped.max(axis=0), 0.0, limits)
    return [round(float(v), 4) for v in (low_corner[0], low_corner[1], high_corner[0], high_corner[1])]


def original_heatmap(
    weights: torch.Tensor,
    input_size: tuple[int, int],
    input_affine: torch.Tensor | np.ndarray,
    original_affine: torch.Tensor | np.ndarray,
    original_size: tuple[int, int],
) -> np.ndarray:
    """The patch-grid ``weights`` ``(columns, rows)`` on the original image's ``(W, H)`` pixel grid (0 outside).

    Each patch fills its pixels of the network input; MONAI's :class:`~monai.transforms.SpatialResample` (nearest,
    zero padding) takes that map from the input's affine to the original one.
    """
    grid = weights.detach().float().cpu().as_subclass(torch.Tensor)[None, None]  # a MetaTensor's own affine dropped
    on_input = F.interpolate(grid, size=tuple(int(s) for s in input_size), mode="nearest")[0]
    source = MetaTensor(on_input, affine=torch.as_tensor(np.asarray(input_affine), dtype=torch.float64))
    resampled = SpatialResample(mode="nearest", padding_mode="zeros")(
        source,
        dst_affine=torch.as_tensor(np.asarray(original_affine), dtype=torch.float64),
        spatial_size=tuple(int(s) for s in original_size),
    )
    return np.asarray(torch.as_tensor(resampled)[0].cpu(), dtype=np.float32)


class GroundingWriter(_PredictionWriter):
    """Write ``<stem>_grounding_<slug>.png`` and ``<stem>_grounding.json`` for every image (see the module docstring).

    Reads the evaluator output of :class:`~sista_monai.engines.SISTAGroundingInferer` (``pred["weights"]`` ``(B, P)``,
    ``pred["patch_grid"]``, ``pred["words"]``) and :class:`~sista_monai.engines.GroundingPrepareBatch` (``label``:
    ``source``, ``path``, ``input_affine``, ``original_affine``, ``original_size``), and the input image's size.

    Args:
        output_dir: folder of the files (created; an output name with subfolders gets them).
        phrase: the phrase (names the PNG; written in the JSON).
        max_display_size: the PNG's longest side at most (the original image is shrunk for display, the JSON's
            box stays in original pixels); ``None`` keeps the original size.
    """

    def __init__(self, output_dir: str | os.PathLike, phrase: str | None, max_display_size: int | None = 1024) -> None:
        super().__init__(output_dir, None, "image", None, None)
        self.phrase = phrase
        self.max_display_size = int(max_display_size) if max_display_size else None
        self.loader = LoadChestXray()

    def attach(self, engine: Engine) -> None:
        """Write after every iteration; log the count at the end."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self._log)

    def __call__(self, engine: Engine) -> None:
        if self.phrase is None:
            raise ValueError("phrase grounding needs a phrase (--phrase)")
        output = cast(dict[str, Any], engine.state.output)
        pred, label = output["pred"], output["label"]
        grid = (int(pred["patch_grid"][0]), int(pred["patch_grid"][1]))
        input_size = (int(output["image"].shape[-2]), int(output["image"].shape[-1]))
        for index, stem in enumerate(label["source"]):
            self._write_image(str(stem), pred, label, index, grid, input_size)

    def _write_image(
        self,
        stem: str,
        pred: dict[str, Any],
        label: dict[str, Any],
        index: int,
        grid: tuple[int, int],
        input_size: tuple[int, int],
    ) -> None:
        phrase = cast(str, self.phrase)
        weights = pred["weights"][index].detach().float().cpu().reshape(grid)
        best = int(torch.argmax(weights.flatten()))
        patch = (best // grid[1], best % grid[1])
        input_affine, original_affine = label["input_affine"][index], label["original_affine"][index]
        original_size = (int(label["original_size"][index][0]), int(label["original_size"][index][1]))
        box = patch_box(patch, grid, input_size, input_to_original(input_affine, original_affine), original_size)
        heat = original_heatmap(weights, input_size, input_affine, original_affine, original_size)
        display = np.asarray(self.loader(label["path"][index])[0], dtype=np.float32)  # (W, H) in [0, 1]
        png_name, json_name = grounding_file_names(stem, phrase)
        png = self._picture(display, heat, box)
        self.written.append(atomic_write_bytes(self.output_dir / png_name, png))
        record = {
            "image": stem,
            "phrase": phrase,
            "words": int(pred["words"]),
            "pooling": "mean of the words' STA weights",
            "patch_grid": list(grid),
            "layout": "weights[x][y]: x = patch column, y = patch row",
            "weights": weights.tolist(),
            "patch": list(patch),
            "box": box,
            "box_format": "[x0, y0, x1, y1] in original image pixels, x = column, y = row, x1 and y1 exclusive",
            "image_size": list(original_size),
            "heatmap": Path(png_name).name,
        }
        self._write_as(json_name.removesuffix(".json"), record)

    def _picture(self, display: np.ndarray, heat: np.ndarray, box: list[float]) -> bytes:
        import io

        picture = Image.fromarray(overlay_heatmap(display.T, heat.T))  # (W, H) -> (rows, columns)
        scale = 1.0
        if self.max_display_size and max(picture.size) > self.max_display_size:
            scale = self.max_display_size / max(picture.size)
            size = (max(1, round(picture.size[0] * scale)), max(1, round(picture.size[1] * scale)))
            picture = picture.resize(size, Image.Resampling.BILINEAR)
        width = max(1, round(min(picture.size) / 256))
        x0, y0, x1, y1 = (v * scale for v in box)
        if x1 > x0 and y1 > y0:
            corners = (math.floor(x0), math.floor(y0), max(math.ceil(x1) - 1, 0), max(math.ceil(y1) - 1, 0))
            ImageDraw.Draw(picture).rectangle(corners, outline=BOX_COLOUR, width=width)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return buffer.getvalue()

    def _log(self, engine: Engine) -> None:
        logger.info("grounded the phrase in %d images into %s", len(self.written), self.output_dir)
