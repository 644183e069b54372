"""``python -m sista_monai.bench gpu``: the paper-scale step's code at a tiny size on the CPU, eager and compiled."""

from __future__ import annotations

import json

import pytest
import torch

from sista_monai.bench import gpu


@pytest.mark.slow
def test_tiny_gpu_benchmark_runs_eager_and_compiled(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--size", "tiny", "--device", "cpu", "--iterations", "2", "--rounds", "2", "--warmup", "1", "--json"]
    assert gpu.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["device"] == "cpu" and result["batch_size"] == gpu.SIZES["tiny"]["batch"]
    assert set(result["modes"]) == {"eager", "compiled"}
    for mode in result["modes"].values():
        assert mode["sista_images_per_s"] == pytest.approx(result["batch_size"] / mode["sista_s_per_step"])
        assert mode["sista_over_clip"] == pytest.approx(mode["sista_s_per_step"] / mode["clip_s_per_step"])
        assert 0 < mode["loss_share_of_sista_step"] < 1  # the loss alone is part of what a step does
        assert mode["peak_gib"] == {"sista": None, "clip": None, "loss": None}  # no GPU memory to report on a CPU
        assert "targets_met" not in mode  # the targets are for the paper size on a GPU


def test_table_and_the_paper_size_needs_a_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--size",
        "tiny",
        "--device",
        "cpu",
        "--iterations",
        "1",
        "--rounds",
        "1",
        "--warmup",
        "0",
        "--compile",
        "off",
    ]
    assert gpu.main(argv) == 0
    table = capsys.readouterr().out
    assert "device cpu, size tiny, batch 8" in table and "\neager " in table
    if not torch.cuda.is_available():
        assert gpu.main(["--size", "paper"]) == 2
        assert "needs a CUDA device" in capsys.readouterr().err
