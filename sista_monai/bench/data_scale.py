"""``python -m sista_monai.bench data --project N --workers K``: the data pipeline at MIMIC-CXR scale, projected.

Measured here, per image, with one thread (one DataLoader worker's share), on generated MIMIC-size files
(``--rows`` × ``--columns``, 3000 × 2500 by default: an 8-bit JPEG as MIMIC-CXR-JPG ships, and a 16-bit DICOM
as MIMIC-CXR's DICOMs are):

* ``transform``: decode + display-normalise (:class:`~sista_monai.transforms.LoadChestXrayd`) + MONAI
  ``Resized`` (longest side ``--size``, area) + ``SpatialPadd`` to ``--size``²: the bundles' cached image chain
  before ``NormalizeIntensityd``;
* per storage dtype (``uint8``, ``float16``, ``float32``) of
  :class:`~sista_monai.data.cache.VerifiedPersistentDataset`: ``miss`` (median of ``--repeats`` first epochs: the
  transform, encoding, SHA-256 and the atomic, synced writes of the cache file and its checksum), ``hit`` (median
  of 10 × ``--repeats`` later-epoch reads: read, SHA-256 check, ``torch.load``, float32 again) and the bytes on
  disk per image (cache file + checksum file).

Projected for N images on K workers, assuming linear scaling over workers (each worker with a core of this
machine's speed, and the cache files served from the page cache or a disk at least as fast as the printed read
bandwidth): first-epoch time = N × miss / K, later-epoch rate = K / hit, cache size = N × bytes per image.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data.utils import json_hashing
from monai.transforms import Compose, Resized, SpatialPadd
from PIL import Image

from sista_monai.bench.dicom import write_detector_dicom
from sista_monai.data.cache import STORAGE_DTYPES, VerifiedPersistentDataset
from sista_monai.transforms import LoadChestXray, LoadChestXrayd

__all__ = ["TARGETS", "add_arguments", "measure", "project", "run"]

TARGETS = {"cache_bytes": 30e9, "later_epoch_images_per_s": 1500.0}
"""Issue 18's targets for N = 377,110 images on 16 workers at 256²: cache ≤ 30 GB, later epochs ≥ 1,500 images/s."""

DISPLAY_RANGE: dict[Hashable, tuple[float, float]] = {"image": (0.0, 1.0)}
"""The cached image's range: display-normalised (the bundles store it after ``NormalizeIntensityd``, whose range
maps onto the same 256 codes)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--project`` mode's options (added to ``python -m sista_monai.bench data``'s parser)."""
    parser.add_argument("--project", type=int, default=None, help="project for N images (MIMIC-CXR: 377110)")
    parser.add_argument("--workers", type=int, default=16, help="DataLoader workers of the projection")
    parser.add_argument("--rows", type=int, default=3000, help="generated file height in --project mode")
    parser.add_argument("--columns", type=int, default=2500, help="generated file width in --project mode")


def _write_files(folder: Path, count: int, rows: int, columns: int) -> dict[str, list[Path]]:
    """``count`` 16-bit DICOMs and as many 8-bit JPEGs of the same display-normalised pictures."""
    files: dict[str, list[Path]] = {"jpeg": [], "dicom": []}
    loader = LoadChestXray()
    for index in range(count):
        dicom = write_detector_dicom(
            folder / f"mimic_{index}.dcm", rows=rows, columns=columns, seed=index, window=index % 2 == 0
        )
        pixels = np.asarray(loader(dicom)[0]).T  # (W, H) -> (rows, columns)
        jpeg = folder / f"mimic_{index}.jpg"
        Image.fromarray(np.round(pixels * 255).astype(np.uint8), mode="L").save(jpeg, quality=95)
        files["dicom"].append(dicom)
        files["jpeg"].append(jpeg)
    return files


def _chain(size: int) -> Compose:
    return Compose(
        [
            LoadChestXrayd("image"),
            Resized("image", spatial_size=size, size_mode="longest", mode="area"),
            SpatialPadd("image", spatial_size=[size, size]),
        ]
    )


def _seconds(function: Any) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def _measure_storage(files: list[Path], size: int, repeats: int, dtype: str, folder: Path) -> dict[str, float]:
    items = [{"image": str(path)} for path in files]

    def dataset() -> VerifiedPersistentDataset:
        return VerifiedPersistentDataset(
            items,
            _chain(size),
            cache_dir=folder,
            hash_transform=json_hashing,
            storage_dtype=dtype,
            storage_ranges=DISPLAY_RANGE,
        )

    misses = []
    for _ in range(repeats):
        shutil.rmtree(folder, ignore_errors=True)
        fresh = dataset()
        misses.append(statistics.fmean(_seconds(lambda i=i, d=fresh: d[i]) for i in range(len(items))))
    cached = dataset()
    hit_repeats = 10 * repeats  # a hit is short: more timings for a steady median
    hits = [statistics.median(_seconds(lambda i=i: cached[i]) for _ in range(hit_repeats)) for i in range(len(items))]
    cache_files = sorted(folder.glob("*.pt"))
    if len(cache_files) != len(items):
        raise RuntimeError(f"expected {len(items)} cache files in {folder}, found {len(cache_files)}")
    on_disk = [f.stat().st_size + VerifiedPersistentDataset.checksum_file(f).stat().st_size for f in cache_files]
    return {
        "miss_s": statistics.median(misses),
        "hit_s": statistics.fmean(hits),
        "cache_bytes_per_image": statistics.fmean(on_disk),
    }


def measure(files: dict[str, list[Path]], size: int, repeats: int, folder: Path) -> dict[str, dict[str, Any]]:
    """Per-image figures for each kind of file: ``transform_s``, ``file_bytes`` and one entry per storage dtype."""
    chain = _chain(size)
    results: dict[str, dict[str, Any]] = {}
    for kind, paths in files.items():
        transform = [
            statistics.median(_seconds(lambda p=p: chain({"image": str(p)})) for _ in range(repeats)) for p in paths
        ]
        results[kind] = {
            "files": len(paths),
            "file_bytes": statistics.fmean(p.stat().st_size for p in paths),
            "transform_s": statistics.fmean(transform),
            "storage": {
                dtype: _measure_storage(paths, size, repeats, dtype, folder / f"{kind}-{dtype}")
                for dtype in STORAGE_DTYPES
            },
        }
    return results


def project(per_image: dict[str, float], images: int, workers: int) -> dict[str, float]:
    """N images on K workers from one storage dtype's per-image figures (linear scaling over workers)."""
    rate = workers / per_image["hit_s"]
    return {
        "first_epoch_s": images * per_image["miss_s"] / workers,
        "later_epoch_images_per_s": rate,
        "later_epoch_s": images / rate,
        "cache_bytes": images * per_image["cache_bytes_per_image"],
        "read_bytes_per_s": rate * per_image["cache_bytes_per_image"],
    }


def run(args: argparse.Namespace) -> int:
    """Generate the files, measure, project; print a table, or JSON with ``--json``."""
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="sista-bench-scale-") as tmp:
        folder = Path(tmp)
        (folder / "files").mkdir()
        files = _write_files(folder / "files", args.generated, args.rows, args.columns)
        measured = measure(files, args.size, args.repeats, folder / "cache")
    projection = {
        kind: {dtype: project(figures, args.project, args.workers) for dtype, figures in result["storage"].items()}
        for kind, result in measured.items()
    }
    report = {
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": args.threads},
        "setup": {"rows": args.rows, "columns": args.columns, "size": args.size, "repeats": args.repeats},
        "measured_per_image": measured,
        "projection": {"images": args.project, "workers": args.workers, "figures": projection},
        "targets": TARGETS,
    }
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return 0
    out = sys.stdout.write
    out(
        f"measured here per image ({os.cpu_count()} CPUs, {args.threads} torch thread(s)), generated "
        f"{args.columns}x{args.rows} files, cached at {args.size}x{args.size}\n"
    )
    out(
        f"{'file':6s} {'MB':>6s} {'transform ms':>13s} {'storage':>8s} {'miss ms':>8s} {'hit ms':>7s} {'KB/image':>9s}\n"
    )
    for kind, result in measured.items():
        for dtype, figures in result["storage"].items():
            out(
                f"{kind:6s} {result['file_bytes'] / 1e6:6.2f} {1e3 * result['transform_s']:13.1f} {dtype:>8s} "
                f"{1e3 * figures['miss_s']:8.1f} {1e3 * figures['hit_s']:7.2f} "
                f"{figures['cache_bytes_per_image'] / 1e3:9.1f}\n"
            )
    out(
        f"\nPROJECTION (not measured) for N = {args.project:,} images on K = {args.workers} workers, assuming linear "
        "scaling over workers:\n"
    )
    out(
        f"{'file':6s} {'storage':>8s} {'first epoch min':>16s} {'later images/s':>15s} {'cache GB':>9s} {'read MB/s':>10s}\n"
    )
    for kind, by_dtype in projection.items():
        for dtype, p in by_dtype.items():
            out(
                f"{kind:6s} {dtype:>8s} {p['first_epoch_s'] / 60:16.1f} {p['later_epoch_images_per_s']:15.0f} "
                f"{p['cache_bytes'] / 1e9:9.2f} {p['read_bytes_per_s'] / 1e6:10.1f}\n"
            )
    out(
        f"targets (N = 377,110, 16 workers, 256²): cache <= {TARGETS['cache_bytes'] / 1e9:.0f} GB, "
        f"later epochs >= {TARGETS['later_epoch_images_per_s']:,.0f} images/s\n"
    )
    return 0
