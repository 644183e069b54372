"""The step and loss benchmarks run end to end on tiny sizes and report self-consistent figures."""

from __future__ import annotations

import json
import math

from sista_monai.bench import loss as loss_bench
from sista_monai.bench import step as step_bench


def test_step_benchmark_json(capsys) -> None:
    assert step_bench.main(["--json", "--batch-size", "4", "--iterations", "2", "--rounds", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["iterations"] == 2 and result["batch_size"] == 4
    assert result["sista_trainer_s_per_iteration"] > 0 and result["manual_loop_s_per_iteration"] > 0
    # the timed loops did the same work: the trainer's model and the manual loop's model end with the same weights
    assert result["max_parameter_difference"] < 1e-5


def test_loss_benchmark_json(capsys) -> None:
    argv = [
        "--json",
        "--batch-sizes",
        "8,16",
        "--repeats",
        "2",
        "--encoders",
        "tiny",
        "--tokens",
        "20",
        "--patches",
        "16",
        "--dim",
        "8",
    ]
    assert loss_bench.main(argv) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{") :])
    assert [row["batch"] for row in result["rows"]] == [8, 16]
    for row in result["rows"]:
        assert row["max_abs_diff_vs_references"] < 1e-4  # the batched loss equals the loop references
        assert row["batched_s"] > 0 and row["sample_loop_s"] > 0
    # STA's cross-image term beside the within-pair term at the same B (K = 4 content words per report)
    cross = result["sta_cross"]
    assert cross["content_words_per_report"] == 4 and cross["image_chunk_size"] == 32
    assert [row["batch"] for row in cross["rows"]] == [8, 16]
    for row in cross["rows"]:
        assert row["content_words"] == 4 * row["batch"]
        for key in (
            "loss",
            "cross_s",
            "within_s",
            "time_ratio_to_within",
            "cross_peak_bytes",
            "within_peak_bytes",
            "memory_ratio_to_within",
        ):
            assert math.isfinite(row[key]) and row[key] > 0, key
