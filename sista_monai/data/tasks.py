"""Datalists of the downstream tasks: the data folder, label fractions, segmentation and detection items, inference.

* :func:`dataset_root`: the folder a bundle reads (the embedded demo data, generated when needed, or yours);

* :func:`label_fraction_key`: ``1 | 10 | 100`` percent of the training split → the datalist key of the released
  nested subset (1 % ⊂ 10 % ⊂ 100 %);
* :func:`segmentation_datalist`, :func:`detection_datalist`: a prepared datalist's items in the form the
  segmentation and detection bundles read;
* :func:`inference_datalist`, :func:`source_file`: the images of an inference folder, and the file an image
  came from (named in every per-image output).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import MetaTensor

from sista_monai.config import as_flag

__all__ = [
    "dataset_root",
    "LABEL_FRACTION_KEYS",
    "label_fraction_key",
    "segmentation_datalist",
    "detection_datalist",
    "inference_datalist",
    "source_file",
]

logger = logging.getLogger(__name__)


LABEL_FRACTION_KEYS: dict[int, str] = {1: "training_1", 10: "training_10", 100: "training"}
"""``label_fraction`` (percent of the training split) → datalist key of the released nested subset."""


def dataset_root(
    dataset_dir: str | os.PathLike,
    demo_data: bool | str = True,
    n: int = 600,
    size: int = 256,
    seed: int = 0,
    plant_phi: bool | str = False,
) -> str:
    """The data folder of a bundle: ``dataset_dir`` itself, or the demo data there (generated when needed).

    Args:
        dataset_dir: your prepared dataset folder, or where the demo data lives.
        demo_data: use (and generate when missing or stale) the embedded demo data in ``dataset_dir``; booleans as
            typed on the command line are accepted (:func:`~sista_monai.config.as_flag`).
        n: demo images.
        size: demo image size.
        seed: demo seed.
        plant_phi: plant synthetic PHI in the demo headers (for the privacy tests).

    Returns:
        The folder as a string (configs join file names to it).
    """
    if not as_flag(demo_data, "demo_data"):
        return str(Path(dataset_dir))
    from sista_monai.data.demo import ensure_demo_data  # the generator is only needed for the demo data

    return str(
        ensure_demo_data(Path(dataset_dir), n=n, size=size, seed=seed, plant_phi=as_flag(plant_phi, "demo_plant_phi"))
    )


def label_fraction_key(label_fraction: int | float | str) -> str:
    """``1 | 10 | 100`` (percent of the training split) → ``training_1 | training_10 | training``.

    The 1 % and 10 % subsets are the released nested ones written by ``prepare`` and the demo generator
    (1 % ⊂ 10 % ⊂ 100 %), so every run at a fraction sees the same labelled images.

    Raises:
        ValueError: any other fraction.
    """
    try:
        value = float(label_fraction)
    except (TypeError, ValueError):
        value = float("nan")
    for fraction, key in LABEL_FRACTION_KEYS.items():
        if value == fraction:
            return key
    raise ValueError(f"label_fraction must be one of {sorted(LABEL_FRACTION_KEYS)} (percent), got {label_fraction!r}")


def segmentation_datalist(
    datalist: str | os.PathLike, key: str, mask_key: str = "mask", label_key: str = "label"
) -> list[dict[str, Any]]:
    """``[{"image": path, "label": mask path, "id": ...}, ...]`` from a segmentation datalist's ``key`` split.

    The demo and ``prepare siim`` datalists hold ``{"id", "image", "mask"}`` items with paths relative to the
    datalist's folder (MONAI's ``load_decathlon_datalist`` resolves ``image`` and ``label`` only); the mask
    becomes the ``label`` the supervised engines read.

    Raises:
        KeyError: the split is not in the datalist.
        ValueError: an item lacks its image or mask.
    """
    path = Path(datalist)
    content = json.loads(path.read_text())
    if key not in content:
        raise KeyError(
            f"{path.name} has no {key!r} split (has {sorted(k for k, v in content.items() if isinstance(v, list))})"
        )
    items = []
    for item in content[key]:
        if "image" not in item or mask_key not in item:
            raise ValueError(f"{path.name}: every {key!r} item needs 'image' and {mask_key!r}")
        entry = {k: v for k, v in item.items() if k not in ("image", mask_key)}
        entry["image"] = str(path.parent / item["image"])
        entry[label_key] = str(path.parent / item[mask_key])
        items.append(entry)
    return items


def _is_xywh(box: Any) -> bool:
    try:
        values = np.asarray(box, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return values.shape == (4,) and bool(np.isfinite(values).all()) and values[2] > 0 and values[3] > 0


def detection_datalist(
    datalist: str | os.PathLike, key: str, box_key: str = "box", label_key: str = "label"
) -> list[dict[str, Any]]:
    """``[{"image": path, "box": [[x, y, w, h], ...], "label": [0, ...], "id": ...}, ...]`` of a split.

    The demo and ``prepare rsna`` datalists hold ``{"id", "image", "boxes", "labels"}`` items with image paths
    relative to the datalist's folder and boxes as RSNA's ``[x, y, width, height]`` in original pixels (the
    datalist's ``box_mode``).

    Raises:
        KeyError: the split is not in the datalist.
        ValueError: the datalist's box mode is not ``xywh``, or items lack their image, have a box that is not
            four finite numbers with positive width and height, or a label count that differs from their box
            count (one message listing every such item by position and id).
    """
    path = Path(datalist)
    content = json.loads(path.read_text())
    if key not in content:
        raise KeyError(
            f"{path.name} has no {key!r} split (has {sorted(k for k, v in content.items() if isinstance(v, list))})"
        )
    mode = content.get("box_mode", "xywh")
    if mode != "xywh":
        raise ValueError(f"{path.name}: box_mode must be 'xywh' (RSNA's [x, y, width, height]), got {mode!r}")
    items, problems = [], []
    for index, item in enumerate(content[key]):
        where = f"{path.name} {key}[{index}] (id {item.get('id', '?')})"
        if "image" not in item:
            problems.append(f"{where}: no 'image'")
            continue
        boxes = item.get("boxes", [])
        labels = item.get("labels", [0] * len(boxes))
        if len(labels) != len(boxes):
            problems.append(f"{where}: {len(boxes)} boxes but {len(labels)} labels")
            continue
        bad = [box for box in boxes if not _is_xywh(box)]
        if bad:
            problems.append(f"{where}: box {bad[0]} is not [x, y, width, height] with positive width and height")
            continue
        entry = {k: v for k, v in item.items() if k not in ("image", "boxes", "labels")}
        entry["image"] = str(path.parent / item["image"])
        entry[box_key] = [[float(v) for v in box] for box in boxes]
        entry[label_key] = [int(v) for v in labels]
        items.append(entry)
    if problems:
        raise ValueError(f"{len(problems)} bad item(s) in {path.name}:\n  " + "\n  ".join(problems))
    return items


def inference_datalist(folder: str | os.PathLike, image_key: str = "image") -> list[dict[str, str]]:
    """``[{"image": path}, ...]`` for every DICOM, PNG and JPEG input under ``folder``
    (:func:`~sista_monai.data.inference.find_images`: DICOM found by content, subfolders included).

    The inference bundles use :class:`~sista_monai.data.inference.InferenceInputs`, which also leaves out and
    records the files that cannot be read.

    Raises:
        FileNotFoundError: ``folder`` is not a directory.
        ValueError: no image file in it.
    """
    from sista_monai.data.inference import find_images

    files = find_images(folder)
    if not files:
        raise ValueError(f"dataset_dir {folder} holds no DICOM (by content), PNG or JPEG file, in it or its subfolders")
    return [{image_key: str(path)} for path in files]


def source_file(image: Any) -> str | None:
    """The file an image was loaded from (its ``filename_or_obj`` metadata), if any."""
    if isinstance(image, MetaTensor):
        name = image.meta.get("filename_or_obj")
        return str(name) if name else None
    return None
