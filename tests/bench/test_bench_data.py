"""The data benchmark runs end to end and reports consistent figures (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom

from sista_monai.bench.__main__ import main as bench_main
from sista_monai.bench.data import main
from sista_monai.bench.dicom import write_detector_dicom
from sista_monai.transforms import LoadChestXray


def test_generated_detector_file_is_a_valid_16_bit_chest_like_dicom(tmp_path: Path) -> None:
    path = write_detector_dicom(tmp_path / "d.dcm", rows=250, columns=200, window=True)
    ds = pydicom.dcmread(path)
    assert (ds.Rows, ds.Columns, ds.BitsStored, ds.BitsAllocated) == (250, 200, 12, 16)
    assert ds.pixel_array.max() <= 4095
    image = LoadChestXray()(path)[0].numpy()
    assert image.shape == (200, 250)
    assert np.median(image[95:105, 100:130]) > np.median(image[35:45, 100:130])  # centre brighter than lung


def test_data_benchmark_json(tmp_path: Path, capsys) -> None:
    assert main(["--json", "--generated", "1", "--repeats", "1", "--realdata", str(tmp_path / "absent")]) == 0
    result = json.loads(capsys.readouterr().out)
    gen = result["generated_2500x2048"]
    assert set(result) == {"generated_2500x2048"} and gen["files"] == 1
    assert gen["loader_over_baseline"] == gen["loader_s"] / gen["baseline_s"]
    assert gen["decode_over_cached"] == gen["loader_s"] / gen["cached_s"] > 1.0


def test_dispatcher_rejects_unknown_benchmarks(capsys) -> None:
    assert bench_main(["nope"]) == 2
    assert "usage: python -m sista_monai.bench" in capsys.readouterr().out
