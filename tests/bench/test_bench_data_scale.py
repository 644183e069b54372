"""``python -m sista_monai.bench data --project N --workers K``: per-image figures measured, projection = arithmetic."""

from __future__ import annotations

import json
import os
import re

import pytest

from sista_monai.bench.data import main

TINY = ["--rows", "300", "--columns", "250", "--size", "32", "--generated", "1", "--repeats", "1"]


def test_projection_is_the_arithmetic_of_the_measured_per_image_figures(capsys) -> None:
    assert main(["--project", "1000", "--workers", "4", "--json", *TINY]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["machine"] == {"cpu_count": os.cpu_count(), "torch_threads": 1}
    assert report["projection"]["images"] == 1000 and report["projection"]["workers"] == 4
    measured, figures = report["measured_per_image"], report["projection"]["figures"]
    assert set(measured) == set(figures) == {"jpeg", "dicom"}
    assert measured["jpeg"]["file_bytes"] < measured["dicom"]["file_bytes"]
    assert measured["dicom"]["file_bytes"] > 300 * 250 * 2  # 16-bit pixels
    for kind, result in measured.items():
        assert result["files"] == 1 and result["transform_s"] > 0
        storage = result["storage"]
        assert set(storage) == {"uint8", "float16", "float32"}
        for dtype, per_image in storage.items():
            projected = figures[kind][dtype]
            assert projected["cache_bytes"] == pytest.approx(1000 * per_image["cache_bytes_per_image"], rel=1e-12)
            assert projected["later_epoch_images_per_s"] == pytest.approx(4 / per_image["hit_s"], rel=1e-12)
            assert projected["first_epoch_s"] == pytest.approx(1000 * per_image["miss_s"] / 4, rel=1e-12)
            assert projected["read_bytes_per_s"] == pytest.approx(
                projected["later_epoch_images_per_s"] * per_image["cache_bytes_per_image"], rel=1e-12
            )
            assert per_image["miss_s"] > per_image["hit_s"] > 0
        # 32 x 32 pixels: 1, 2 and 4 bytes each, plus the same file overhead
        sizes = {dtype: storage[dtype]["cache_bytes_per_image"] for dtype in storage}
        assert sizes["float16"] - sizes["uint8"] == pytest.approx(32 * 32, abs=128)
        assert sizes["float32"] - sizes["uint8"] == pytest.approx(3 * 32 * 32, abs=128)
        assert 32 * 32 < sizes["uint8"] < 32 * 32 + 4096


def test_table_states_the_projection_and_its_cache_size(capsys) -> None:
    assert main(["--project", "377110", "--workers", "16", *TINY]) == 0
    out = capsys.readouterr().out
    assert f"({os.cpu_count()} CPUs, 1 torch thread(s))" in out
    assert "PROJECTION (not measured) for N = 377,110 images on K = 16 workers, assuming linear scaling" in out
    measured = {
        (m["file"], m["dtype"]): float(m["kb"])
        for m in re.finditer(
            r"^(?P<file>jpeg|dicom)\s+[\d.]+\s+[\d.]+\s+(?P<dtype>\w+)\s+[\d.]+\s+[\d.]+\s+(?P<kb>[\d.]+)$", out, re.M
        )
    }
    projected = {
        (m["file"], m["dtype"]): float(m["gb"])
        for m in re.finditer(
            r"^(?P<file>jpeg|dicom)\s+(?P<dtype>\w+)\s+[\d.]+\s+\d+\s+(?P<gb>[\d.]+)\s+[\d.]+$", out, re.M
        )
    }
    assert len(measured) == len(projected) == 6
    for key, kb in measured.items():  # GB = N x KB/image, to the printed rounding
        assert projected[key] == pytest.approx(377110 * kb * 1e3 / 1e9, abs=0.005 + 377110 * 0.05e3 / 1e9)
