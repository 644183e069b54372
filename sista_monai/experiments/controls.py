"""What the ablation's probes are judged against: the image-free baselines, and the runs that do not beat them.

:func:`trivial_baselines` fits each task's image-free baseline on the datalist the downstream bundle reads (the
constant predictor of :func:`~sista_monai.experiments.probes.probe_fraction`); :func:`below_baseline` and
:func:`degenerate_runs` name the means and runs that learned nothing from the image.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sista_monai.experiments.effects import _mean_std
from sista_monai.experiments.variants import TASK_METRICS, Fractions, _pairs

__all__ = ["below_baseline", "degenerate_reason", "degenerate_runs", "trivial_baselines"]


def degenerate_reason(task: str, report: Mapping[str, Any]) -> str | None:
    """Why a downstream run's test report shows a degenerate probe, or ``None``.

    Classification: no AUROC, or exactly 0.5 (a constant score ranks nothing). Segmentation: Dice 0 on every image
    with a pneumothorax (the all-empty prediction, or masks that never touch one). Detection: no mAP, or 0.
    """
    metrics = report.get("metrics", {})
    if task == "classification":
        auroc = metrics.get("auroc")
        if auroc is None or auroc == 0.5:
            return f"AUROC {auroc}: constant scores"
    elif task == "segmentation":
        if metrics.get("positive_dice") is None:
            return "no test image with a pneumothorax: the probe's masks cannot be judged"
        if metrics["positive_dice"] == 0.0:
            return "Dice 0 on every image with a pneumothorax (all-empty or misplaced masks)"
    elif task == "detection":
        if not metrics.get("map"):
            return f"mAP {metrics.get('map')}: no correct box"
    return None


def degenerate_runs(out: Path, tasks: Sequence[str]) -> list[str]:
    """Every downstream run under ``out`` whose probe is degenerate (:func:`degenerate_reason`), one line each."""
    lines = []
    for task in tasks:
        for metrics_file in sorted((out / task).glob("*/eval/metrics.json")):
            reason = degenerate_reason(task, json.loads(metrics_file.read_text()))
            if reason:
                lines.append(f"{task} `{metrics_file.parent.parent.name}`: {reason}")
    return lines


def _task_datalist(task: str, fraction: int, overrides: Mapping[str, Any]) -> tuple[Path, str]:
    """The datalist file a downstream bundle reads with ``overrides`` and its training split at ``fraction`` %."""
    from monai.bundle import ConfigParser

    from sista_monai.experiments.compare import TASKS

    parser = ConfigParser()
    parser.read_config(TASKS[task].config_file)
    parser.update({**overrides, "label_fraction": fraction})
    return Path(parser.get_parsed_content("datalist")), str(parser.get_parsed_content("train_key"))


def _masks(items: Sequence[Mapping[str, Any]]) -> Any:
    import numpy as np
    from PIL import Image

    return np.stack([np.asarray(Image.open(item["label"]).convert("L")) > 0 for item in items])


def trivial_baselines(
    tasks: Sequence[str], fractions: Fractions, overrides: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The image-free baseline of each task and label fraction on the test split (:mod:`sista_monai.metrics.baselines`).

    Returns ``{task: {fraction: {"value": v, "what": description, "validation": v, ...}}}``, ``value`` in the
    task's table metric on the test split and ``validation`` the same baseline's score on the validation split
    (fitted on the same labelled training images; ``None`` without a validation split), the constant predictor of
    :func:`probe_fraction`.
    """
    from sista_monai.data.tasks import detection_datalist, segmentation_datalist
    from sista_monai.metrics.baselines import CONSTANT_SCORE_AUROC, detection_baseline, segmentation_baselines

    baselines: dict[str, Any] = {}
    for task, fraction in _pairs(tasks, fractions):
        entry: dict[str, Any]
        if task == "classification":
            entry = {"value": CONSTANT_SCORE_AUROC, "what": "a constant score", "validation": CONSTANT_SCORE_AUROC}
        else:
            datalist, train_key = _task_datalist(task, fraction, overrides[task])
            has_validation = bool(json.loads(Path(datalist).read_text()).get("validation"))
            if task == "segmentation":
                training_masks = _masks(segmentation_datalist(datalist, train_key))
                result = segmentation_baselines(training_masks, _masks(segmentation_datalist(datalist, "test")))
                best = (
                    "all_empty"
                    if result["all_empty"]["mean_dice"] >= result["constant_mask"]["mean_dice"]
                    else "constant_mask"
                )
                validation = (
                    segmentation_baselines(training_masks, _masks(segmentation_datalist(datalist, "validation")))[
                        "best_mean_dice"
                    ]
                    if has_validation
                    else None
                )
                entry = {
                    "value": result["best_mean_dice"],
                    "what": f"the {best.replace('_', '-')} prediction",
                    **result,
                    "validation": validation,
                }
            else:
                training = [item["box"] for item in detection_datalist(datalist, train_key)]
                test = [item["box"] for item in detection_datalist(datalist, "test")]
                result = detection_baseline(training, test)
                validation = (
                    detection_baseline(training, [item["box"] for item in detection_datalist(datalist, "validation")])[
                        "map"
                    ]
                    if has_validation
                    else None
                )
                entry = {
                    "value": result["map"],
                    "what": f"{result['boxes']} constant boxes",
                    "map50": result["map50"],
                    "validation": validation,
                }
        baselines.setdefault(task, {})[str(fraction)] = entry
    return baselines


def below_baseline(results: Mapping[str, Any], tasks: Sequence[str], fractions: Fractions) -> list[str]:
    """Each variant, task and fraction whose mean over seeds does not beat the image-free baseline, one line each."""
    lines = []
    for task, fraction in _pairs(tasks, fractions):
        baseline = results.get("baselines", {}).get(task, {}).get(str(fraction))
        if baseline is None or baseline["value"] is None:
            continue
        for name, entry in results["variants"].items():
            mean, _, n = _mean_std(entry.get(task, {}).get(str(fraction), []))
            if n and mean <= baseline["value"]:
                lines.append(
                    f"{name}: {TASK_METRICS[task][1]}, {fraction} %: {mean:.3f} ≤ {baseline['value']:.3f} ({baseline['what']})"
                )
    return lines
