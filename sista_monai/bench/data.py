"""``python -m sista_monai.bench data``: the cost of display-normalised loading, and of not decoding at all.

Three timings per image, all measured in the same run on the same files:

* ``baseline``: ``pydicom.dcmread(path).pixel_array`` → float32 tensor → MONAI ``Resize`` (longest side to
  ``--size``, area interpolation): the least any loader must do;
* ``loader``: :class:`~sista_monai.transforms.LoadChestXray` (modality LUT, VOI, polarity, metadata) → the
  same ``Resize``;
* ``monai``: MONAI's own ``LoadImage(reader="PydicomReader")`` → the same ``Resize``, for context (no VOI,
  no polarity; it also produces the (W, H) layout);
* ``cached``: the same deterministic chain read back from a MONAI :class:`~monai.data.PersistentDataset`.

With ``--project N`` it measures the data pipeline on generated MIMIC-size files instead and projects the
first-epoch time, later-epoch rate and cache size for N images on ``--workers`` workers
(:mod:`sista_monai.bench.data_scale`).

Files: the DICOMs in ``../shared/realdata`` when present, and generated 2500×2048 16-bit detector-size
DICOMs (half with window tags, half falling back to the percentile window). Targets: ``loader / baseline``
≤ 1.3, ``loader / cached`` ≥ 10.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import torch
from monai.data import PersistentDataset
from monai.transforms import Compose, LoadImage, Resize, Resized

from sista_monai.bench import data_scale
from sista_monai.bench.dicom import write_detector_dicom
from sista_monai.transforms import LoadChestXray, LoadChestXrayd

__all__ = ["main"]


def _median_time(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _baseline(path: Path, resize: Resize) -> torch.Tensor:
    ds = pydicom.dcmread(path, force=True)
    if "TransferSyntaxUID" not in ds.file_meta:  # a file without preamble/meta (one of the real samples)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    pixels = ds.pixel_array
    return resize(torch.from_numpy(pixels.astype(np.float32))[None])


def _monai_reads(path: Path) -> bool:
    """MONAI's PydicomReader refuses files without the DICOM preamble; such files are left out of its line."""
    with path.open("rb") as handle:
        return handle.read(132)[128:132] == b"DICM"


def _time_group(files: list[Path], size: int, repeats: int, cache_dir: Path) -> dict[str, float]:
    resize = Resize(spatial_size=size, size_mode="longest", mode="area")
    loader = LoadChestXray()
    monai_loader = LoadImage(reader="PydicomReader", image_only=True, ensure_channel_first=True, dtype=np.float32)
    base = [_median_time(lambda p=p: _baseline(p, resize), repeats) for p in files]
    monai = [_median_time(lambda p=p: resize(monai_loader(p)), repeats) for p in files if _monai_reads(p)]
    ours = [_median_time(lambda p=p: resize(loader(p)), repeats) for p in files]
    chain = Compose([LoadChestXrayd("image"), Resized("image", spatial_size=size, size_mode="longest", mode="area")])
    dataset = PersistentDataset([{"image": str(p)} for p in files], transform=chain, cache_dir=cache_dir)
    for index in range(len(dataset)):
        dataset[index]  # fill the cache
    cached = [_median_time(lambda i=i: dataset[i], repeats) for i in range(len(dataset))]
    mean = statistics.fmean
    return {
        "files": len(files),
        "baseline_s": mean(base),
        "loader_s": mean(ours),
        "cached_s": mean(cached),
        "monai_pydicom_reader_s": mean(monai) if monai else float("nan"),
        "monai_files": len(monai),
        "loader_over_baseline": mean(ours) / mean(base),
        "decode_over_cached": mean(ours) / mean(cached),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table, or JSON with ``--json``."""
    parser = argparse.ArgumentParser(prog="python -m sista_monai.bench data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--realdata", type=Path, default=Path("..") / "shared" / "realdata")
    parser.add_argument(
        "--generated", type=int, default=4, help="number of generated 2500x2048 files (--project: of each kind)"
    )
    parser.add_argument("--size", type=int, default=256, help="longest side after resizing")
    parser.add_argument("--repeats", type=int, default=5, help="timings per file (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = per-worker figure)")
    data_scale.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.project is not None:
        return data_scale.run(args)
    torch.set_num_threads(args.threads)

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="sista-bench-data-") as tmp:
        tmp_path = Path(tmp)
        real = sorted(args.realdata.rglob("*.dcm")) if args.realdata.is_dir() else []
        if real:
            results["realdata"] = _time_group(real, args.size, args.repeats, tmp_path / "cache-real")
        generated_dir = tmp_path / "generated"
        generated_dir.mkdir()
        generated = [
            write_detector_dicom(generated_dir / f"detector_{i}.dcm", seed=i, window=i % 2 == 0)
            for i in range(args.generated)
        ]
        if generated:
            results["generated_2500x2048"] = _time_group(generated, args.size, args.repeats, tmp_path / "cache-gen")

    if args.json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
        return 0
    sys.stdout.write(
        f"{'files':22s} {'n':>3s} {'baseline ms':>12s} {'monai ms':>9s} {'loader ms':>10s} "
        f"{'cached ms':>10s} {'loader/base':>12s} {'decode/cached':>14s}\n"
    )
    for name, r in results.items():
        sys.stdout.write(
            f"{name:22s} {r['files']:3d} {1e3 * r['baseline_s']:12.2f} {1e3 * r['monai_pydicom_reader_s']:9.2f} "
            f"{1e3 * r['loader_s']:10.2f} "
            f"{1e3 * r['cached_s']:10.2f} {r['loader_over_baseline']:12.2f} {r['decode_over_cached']:14.1f}\n"
        )
    sys.stdout.write("targets: loader/base <= 1.3, decode/cached >= 10\n")
    return 0
