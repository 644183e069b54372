"""The downstream probes' validation scores, and the label fraction at which probes are compared.

A downstream bundle (``bundles/*/configs/train.json``) validates every ``val_interval`` epochs and keeps the
weights of its best validation epoch (``models/model.pt``, :class:`~sista_monai.handlers.BestModelSaver`); its
``eval/metrics.json`` holds the *test* metrics of those weights only. The validation metric of every epoch is in
the run's TensorBoard log (``logs/events.*``, written by the validator's ``MainRankTensorBoardStatsHandler``
under the evaluator's key metric name: ``val_auroc``, ``val_mean_dice``, ``val_map``), which
:func:`validation_scores` reads: the final epoch's value and the best one (the checkpoint's).

The best epoch's value is biased upwards by the selection (the maximum of a few noisy values beats 0.5 even
for a probe that learned nothing), so :func:`probe_fraction` judges probes by the *final* epoch's validation
score by default.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["VALIDATION_KEYS", "constant_validation_score", "probe_fraction", "validation_scores"]

VALIDATION_KEYS = {"final": "validation_final", "best": "validation_best"}
"""``summary.json`` keys of a variant's validation scores (``{task: {fraction: [value per seed]}}``): the final
validation epoch's, and the best one's (the epoch whose weights were tested)."""


def validation_scores(bundle_root: str | Path, metric: str) -> dict[str, float]:
    """The validation ``metric`` of a finished downstream run, read from its TensorBoard log.

    Args:
        bundle_root: the run's bundle folder (its ``logs/events.*``).
        metric: the test metric's name in ``eval/metrics.json`` (``auroc``, ``mean_dice``, ``map``); the
            validator logs it as ``val_<metric>``.

    Returns:
        ``{"final": v, "best": v, "epochs": k}``: the value of the last validation, the best finite value (the
        epoch whose weights :class:`~sista_monai.handlers.BestModelSaver` kept; NaN when none was finite, e.g. a
        single-class validation split) and the number of validations. NaN values and 0 epochs when the run left no
        such scalar. When several event files hold it (a run redone in the same folder), the newest one is read.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tag = f"val_{metric}"
    files = sorted(Path(bundle_root, "logs").glob("events.*"), key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
    for path in files:
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
        accumulator.Reload()
        if tag not in accumulator.Tags().get("scalars", []):
            continue
        events = sorted(accumulator.Scalars(tag), key=lambda e: (e.step, e.wall_time))
        values = [float(e.value) for e in events]
        finite = [v for v in values if math.isfinite(v)]
        return {
            "final": values[-1] if values else float("nan"),
            "best": max(finite) if finite else float("nan"),
            "epochs": len(values),
        }
    return {"final": float("nan"), "best": float("nan"), "epochs": 0}


def constant_validation_score(results: Mapping[str, Any], task: str, fraction: int | str) -> float | None:
    """The constant predictor's validation score of ``task`` at ``fraction`` %, or ``None`` when unknown.

    ``results["baselines"][task][fraction]["validation"]`` when :func:`~sista_monai.experiments.controls.trivial_baselines`
    recorded it; for classification a constant score's AUROC, 0.5, on any split.
    """
    entry = results.get("baselines", {}).get(task, {}).get(str(fraction))
    if entry is not None and entry.get("validation") is not None:
        return float(entry["validation"])
    if task == "classification":
        from sista_monai.metrics.baselines import CONSTANT_SCORE_AUROC

        return float(CONSTANT_SCORE_AUROC)
    return None


def probe_fraction(results: Mapping[str, Any], task: str, key: str = VALIDATION_KEYS["final"]) -> int | None:
    """The smallest label fraction at which every encoder's probe beats the constant predictor on validation.

    The encoders are the variants of ``results["variants"]`` trained on ``task`` (a ``task`` entry, random
    initialisation included); the fractions are those any of them was run at. At a fraction, every encoder must
    have a finite mean over seeds of its validation scores (``entry[key][task][fraction]``, NaN seeds left out)
    strictly above :func:`constant_validation_score`; an encoder without validation scores there fails it.

    Args:
        results: ``summary.json``'s content (:func:`~sista_monai.experiments.runner.run_ablation`).
        task: ``classification``, ``segmentation`` or ``detection``.
        key: the validation scores judged: ``validation_final`` (default: the last epoch's, not selected) or
            ``validation_best`` (the tested checkpoint's, biased upwards by the selection).

    Returns:
        The fraction (percent), or ``None`` when no fraction qualifies, no encoder was trained on ``task`` or the
        constant predictor's validation score is unknown.
    """
    encoders = [entry for entry in results.get("variants", {}).values() if task in entry]
    fractions = sorted({int(f) for entry in encoders for f in entry[task]})
    for fraction in fractions:
        constant = constant_validation_score(results, task, fraction)
        if constant is None:
            continue
        if all(_mean(entry.get(key, {}).get(task, {}).get(str(fraction), [])) > constant for entry in encoders):
            return fraction
    return None


def _mean(values: Any) -> float:
    """Mean of the finite values; NaN (which beats nothing) without any."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(finite) if finite else float("nan")
