"""The end-of-run report of the pretraining bundle: retrieval, SIA flags and STA pointing against chance."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sista_monai.handlers.export import atomic_write_bytes

__all__ = ["TARGETS", "summarise_test_metrics", "write_test_report"]

logger = logging.getLogger(__name__)

TARGETS = {"recall_at_5_over_chance": 3.0, "sia_flag_precision": 0.9, "sta_pointing_over_chance": 2.0}
"""What the default demo run must show (issue: Recall@5 ≥ 3× chance, flag precision ≥ 0.9, pointing ≥ 2× chance)."""


def _ratio(value: float, chance: float) -> float:
    return value / chance if chance and not math.isnan(value) and not math.isnan(chance) else float("nan")


def summarise_test_metrics(metrics: dict[str, float], n_pairs: int) -> dict[str, Any]:
    """Arrange the evaluator's metrics with their chance levels and the targets.

    Args:
        metrics: ``evaluator.state.metrics`` of the test evaluator of ``configs/train.json``.
        n_pairs: number of image–report pairs evaluated (retrieval chance at K is ``K / n_pairs``).
    """
    chance = {k: min(1.0, k / n_pairs) for k in (1, 5, 10)}
    retrieval = {
        direction: {f"R@{k}": float(metrics.get(f"recall_at_{k}_{direction}", float("nan"))) for k in (1, 5, 10)}
        for direction in ("image_to_report", "report_to_image")
    }
    pointing, pointing_chance = float(metrics.get("sta_pointing_accuracy", float("nan"))), float(metrics.get("sta_pointing_chance", float("nan")))
    summary = {
        "split": "test",
        "n_pairs": n_pairs,
        "retrieval": {**retrieval, "chance": {f"R@{k}": v for k, v in chance.items()}},
        "recall_at_5_over_chance": _ratio(retrieval["image_to_report"]["R@5"], chance[5]),
        "sia": {"flag_precision": float(metrics.get("sia_flag_precision", float("nan"))), "flag_rate": float(metrics.get("sia_flag_rate", float("nan")))},
        "sta": {"pointing_accuracy": pointing, "pointing_chance": pointing_chance},
        "sta_pointing_over_chance": _ratio(pointing, pointing_chance),
        "targets": dict(TARGETS),
    }
    measured = {
        "recall_at_5_over_chance": summary["recall_at_5_over_chance"],
        "sia_flag_precision": summary["sia"]["flag_precision"],
        "sta_pointing_over_chance": summary["sta_pointing_over_chance"],
    }
    summary["targets_met"] = {k: bool(measured[k] >= TARGETS[k]) for k in TARGETS}
    return summary


def write_test_report(
    evaluator: Any, output_path: str | os.PathLike, heatmaps: Callable[[], Any] | None = None
) -> dict[str, Any]:
    """Run the test evaluator, write ``metrics.json`` atomically (rank 0), log the summary, draw heat maps.

    Returns:
        The summary written (see :func:`summarise_test_metrics`).
    """
    evaluator.run()
    n_pairs = len(evaluator.data_loader.dataset)
    summary = summarise_test_metrics(dict(evaluator.state.metrics), n_pairs)
    rank0 = not (torch.distributed.is_available() and torch.distributed.is_initialized()) or torch.distributed.get_rank() == 0
    if rank0:
        atomic_write_bytes(Path(output_path), (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
        r = summary["retrieval"]
        logger.info(
            "test (%d pairs): image->report R@1/5/10 = %.3f/%.3f/%.3f (chance R@5 %.3f, %.1fx); "
            "report->image R@5 = %.3f; SIA flag precision %.3f (flag rate %.4f); STA pointing %.3f vs chance %.3f (%.1fx); "
            "targets met: %s",
            n_pairs, r["image_to_report"]["R@1"], r["image_to_report"]["R@5"], r["image_to_report"]["R@10"],
            r["chance"]["R@5"], summary["recall_at_5_over_chance"], r["report_to_image"]["R@5"],
            summary["sia"]["flag_precision"], summary["sia"]["flag_rate"], summary["sta"]["pointing_accuracy"],
            summary["sta"]["pointing_chance"], summary["sta_pointing_over_chance"], summary["targets_met"],
        )
        if heatmaps is not None:
            heatmaps()
    return summary
