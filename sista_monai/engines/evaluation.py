"""The end-of-run report of the pretraining bundle: grounding, retrieval, SIA flags and STA sparsity, against baselines."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sista_monai.io import atomic_write_bytes

__all__ = ["TARGETS", "summarise_test_metrics", "write_test_report"]

logger = logging.getLogger(__name__)

TARGETS = {
    "lesion_grounding_over_prior": 2.0,
    "semantic_precision_over_chance": 2.0,
    "sia_flag_precision": 0.8,
    "sia_flag_recall": 0.5,
}
"""What the default demo run must show: lesion grounding at least twice its image-free prior, semantic
precision@5 at least twice its chance level, and SIA flags (text source) with precision ≥ 0.8 at recall ≥ 0.5."""


def _ratio(value: float, reference: float) -> float:
    if not reference or math.isnan(value) or math.isnan(reference):
        return float("nan")
    return value / reference


def _metric(metrics: dict[str, float], name: str) -> float:
    return float(metrics.get(name, float("nan")))


def summarise_test_metrics(
    metrics: dict[str, float], n_pairs: int, info: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Arrange the evaluator's metrics under the keys of ``eval/metrics.json`` (a contract other tools read).

    Args:
        metrics: ``evaluator.state.metrics`` of the test evaluator of ``configs/train.json`` (its
            ``evaluation_metrics``).
        n_pairs: number of image–report pairs evaluated (retrieval chance at K is ``K / n_pairs``).
        info: configuration facts to record: ``{"sia": {"source", "threshold"}, "sta": {"sparsity_threshold"}}``.

    Returns:
        ``split``, ``n_pairs``; ``grounding`` (``lesion`` and ``zone``: ``accuracy``, ``chance``, ``prior``,
        ``trials``); ``retrieval`` (exact-pair Recall@1/5/10 both ways with chance, ``semantic``:
        ``precision_at_5`` and ``chance``); ``sia`` (``source``, ``threshold``, ``flag_precision``, ``flag_recall``,
        ``flag_rate``, ``base_rate``, ``rows_without_negatives``); ``sta`` (``patches_kept``,
        ``sparsity_threshold``); ``targets``, ``measured`` and ``targets_met``.
    """
    info = info or {}
    chance = {k: min(1.0, k / n_pairs) for k in (1, 5, 10)}
    retrieval: dict[str, Any] = {
        direction: {f"R@{k}": _metric(metrics, f"recall_at_{k}_{direction}") for k in (1, 5, 10)}
        for direction in ("image_to_report", "report_to_image")
    }
    retrieval["chance"] = {f"R@{k}": v for k, v in chance.items()}
    retrieval["semantic"] = {
        "precision_at_5": _metric(metrics, "semantic_precision_at_5"),
        "chance": _metric(metrics, "semantic_precision_chance"),
    }
    grounding = {
        game: {
            report: _metric(metrics, f"{game}_pointing_{report}")
            for report in ("accuracy", "chance", "prior", "trials")
        }
        for game in ("lesion", "zone")
    }
    for game in grounding.values():
        game["trials"] = int(game["trials"]) if not math.isnan(game["trials"]) else 0
    sia = {
        "source": info.get("sia", {}).get("source"),
        "threshold": info.get("sia", {}).get("threshold"),
        **{
            name: _metric(metrics, f"sia_{name}")
            for name in ("flag_precision", "flag_recall", "flag_rate", "base_rate", "rows_without_negatives")
        },
    }
    sta = {
        "patches_kept": _metric(metrics, "sta_patches_kept"),
        "sparsity_threshold": info.get("sta", {}).get("sparsity_threshold"),
    }
    measured = {
        "lesion_grounding_over_prior": _ratio(grounding["lesion"]["accuracy"], grounding["lesion"]["prior"]),
        "semantic_precision_over_chance": _ratio(
            retrieval["semantic"]["precision_at_5"], retrieval["semantic"]["chance"]
        ),
        "sia_flag_precision": sia["flag_precision"],
        "sia_flag_recall": sia["flag_recall"],
    }
    return {
        "split": "test",
        "n_pairs": n_pairs,
        "grounding": grounding,
        "retrieval": retrieval,
        "sia": sia,
        "sta": sta,
        "targets": dict(TARGETS),
        "measured": measured,
        "targets_met": {k: bool(measured[k] >= TARGETS[k]) for k in TARGETS},
    }


def write_test_report(
    evaluator: Any,
    output_path: str | os.PathLike,
    heatmaps: Callable[[], Any] | None = None,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the test evaluator, write ``metrics.json`` atomically (rank 0), log the summary, draw heat maps.

    Args:
        evaluator: the test evaluator.
        output_path: where ``metrics.json`` goes.
        heatmaps: called after the report (rank 0) to draw the alignment heat maps.
        info: configuration facts recorded in the report (see :func:`summarise_test_metrics`).

    Returns:
        The summary written (see :func:`summarise_test_metrics`).
    """
    evaluator.run()
    n_pairs = len(evaluator.data_loader.dataset)
    summary = summarise_test_metrics(dict(evaluator.state.metrics), n_pairs, info)
    rank0 = (
        not (torch.distributed.is_available() and torch.distributed.is_initialized())
        or torch.distributed.get_rank() == 0
    )
    if rank0:
        atomic_write_bytes(Path(output_path), (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
        r, g, sia = summary["retrieval"], summary["grounding"], summary["sia"]
        logger.info(
            "test (%d pairs): lesion grounding %.3f (image-free prior %.3f, chance %.3f, %d trials); "
            "zone grounding %.3f (prior %.3f, chance %.3f); semantic precision@5 %.3f (chance %.3f); "
            "image->report R@1/5/10 = %.3f/%.3f/%.3f (chance R@5 %.3f); report->image R@5 = %.3f; "
            "SIA flags (%s, theta %s): precision %.3f, recall %.3f, rate %.4f (base rate %.3f); "
            "STA patches kept %.3f; targets met: %s",
            n_pairs,
            g["lesion"]["accuracy"],
            g["lesion"]["prior"],
            g["lesion"]["chance"],
            g["lesion"]["trials"],
            g["zone"]["accuracy"],
            g["zone"]["prior"],
            g["zone"]["chance"],
            r["semantic"]["precision_at_5"],
            r["semantic"]["chance"],
            r["image_to_report"]["R@1"],
            r["image_to_report"]["R@5"],
            r["image_to_report"]["R@10"],
            r["chance"]["R@5"],
            r["report_to_image"]["R@5"],
            sia["source"],
            sia["threshold"],
            sia["flag_precision"],
            sia["flag_recall"],
            sia["flag_rate"],
            sia["base_rate"],
            summary["sta"]["patches_kept"],
            summary["targets_met"],
        )
        if heatmaps is not None:
            heatmaps()
    return summary
