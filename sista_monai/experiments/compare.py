"""Pretrained versus randomly initialised encoder on a downstream bundle: the table users expect.

::

    python -m sista_monai.experiments.compare classification \\
        [--pretrained bundles/pretrain/models/image_encoder.pt] [--fractions 1 10] [--seeds 0 1 2] \\
        [--work-dir results/compare_classification] [--set key=value ...] [--reuse]

For every label fraction and seed, the task's bundle is trained twice with its own ``configs/train.json``
(the linear probe by default), once with ``pretrained_encoder`` = the given file and once with ``null``,
each run in ``<work-dir>/<encoder>_f<fraction>_s<seed>/`` (a ``bundle_root``); the test-split metric of
each run's ``eval/metrics.json`` is tabulated as mean ± sample standard deviation over the seeds.
``<work-dir>/summary.json`` holds every run's value and ``<work-dir>/table.md`` the Markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sista_monai.io.encoder import encoder_source

__all__ = ["TASKS", "DownstreamTask", "RunResult", "run_comparison", "format_table", "main"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DownstreamTask:
    """A downstream bundle the comparison can run.

    Attributes:
        config_file: the bundle's ``train.json`` (relative to the repository root).
        metric: key of ``metrics.json["metrics"]`` that is tabulated.
        metric_label: its name in the table.
    """

    config_file: str
    metric: str
    metric_label: str


TASKS: dict[str, DownstreamTask] = {
    "classification": DownstreamTask("bundles/rsna_pneumonia_classification/configs/train.json", "auroc", "AUROC"),
    "segmentation": DownstreamTask(
        "bundles/siim_pneumothorax_segmentation/configs/train.json", "mean_dice", "mean Dice"
    ),
    "detection": DownstreamTask("bundles/rsna_pneumonia_detection/configs/train.json", "map", "mAP"),
}
"""Tasks by name."""


@dataclass(frozen=True)
class RunResult:
    """One training run of the comparison."""

    encoder: str
    fraction: int
    seed: int
    value: float
    seconds: float
    bundle_root: str


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _read_metric(bundle_root: Path, metric: str) -> float:
    report = json.loads((bundle_root / "eval" / "metrics.json").read_text())
    value = report.get("metrics", {}).get(metric)
    return float("nan") if value is None else float(value)


def run_comparison(
    task: DownstreamTask,
    pretrained: str | None,
    fractions: Sequence[int],
    seeds: Sequence[int],
    work_dir: str | Path,
    overrides: Mapping[str, Any] | None = None,
    reuse: bool = False,
) -> list[RunResult]:
    """Train the task's bundle for every (encoder, fraction, seed) and collect the test metric.

    Args:
        task: the downstream task.
        pretrained: the pretrained ``image_encoder.pt``; the random-initialisation runs use ``null``.
        fractions: label fractions (percent: 1, 10, 100).
        seeds: seeds of the runs (data order, augmentation, head and random-encoder initialisation).
        work_dir: folder of the runs' bundle roots.
        overrides: further config overrides applied to every run.
        reuse: keep the result of a run whose ``eval/metrics.json`` already exists.

    Returns:
        One :class:`RunResult` per run.
    """
    from monai.bundle import run as bundle_run

    work_dir = Path(work_dir)
    encoders = {"pretrained": pretrained, "random": None}
    results = []
    for fraction in fractions:
        for seed in seeds:
            for name, encoder in encoders.items():
                bundle_root = work_dir / f"{name}_f{fraction}_s{seed}"
                metrics_file = bundle_root / "eval" / "metrics.json"
                start = time.perf_counter()
                if not (reuse and metrics_file.is_file()):
                    metrics_file.unlink(missing_ok=True)
                    logger.info("training %s encoder, %d %% labels, seed %d -> %s", name, fraction, seed, bundle_root)
                    bundle_run(
                        config_file=task.config_file,
                        bundle_root=str(bundle_root),
                        # the string: MONAI's bundle runner drops None overrides (the default file would be used)
                        pretrained_encoder=encoder if encoder is not None else "null",
                        label_fraction=fraction,
                        seed=seed,
                        **dict(overrides or {}),
                    )
                value = _read_metric(bundle_root, task.metric)
                results.append(
                    RunResult(name, int(fraction), int(seed), value, time.perf_counter() - start, str(bundle_root))
                )
                logger.info("%s encoder, %d %% labels, seed %d: %s %.4f", name, fraction, seed, task.metric, value)
    return results


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def summarise(results: Sequence[RunResult]) -> dict[str, dict[int, dict[str, Any]]]:
    """``{encoder: {fraction: {"mean", "std", "values", "seeds"}}}`` (sample standard deviation)."""
    summary: dict[str, dict[int, dict[str, Any]]] = {}
    for result in results:
        entry = summary.setdefault(result.encoder, {}).setdefault(result.fraction, {"values": [], "seeds": []})
        entry["values"].append(result.value)
        entry["seeds"].append(result.seed)
    for by_fraction in summary.values():
        for entry in by_fraction.values():
            entry["mean"], entry["std"] = _mean_std(entry["values"])
    return summary


def format_table(results: Sequence[RunResult], metric_label: str) -> str:
    """Markdown table: one row per encoder, one column per label fraction, ``mean ± std (n seeds)``."""
    summary = summarise(results)
    fractions = sorted({r.fraction for r in results})
    labels = {"pretrained": "SISTA-pretrained encoder", "random": "random initialisation"}
    header = "| encoder | " + " | ".join(f"{metric_label} at {f} % labels" for f in fractions) + " |"
    lines = [header, "|---|" + "---|" * len(fractions)]
    for encoder in ("pretrained", "random"):
        if encoder not in summary:
            continue
        cells = []
        for fraction in fractions:
            entry = summary[encoder].get(fraction)
            cells.append(f"{entry['mean']:.3f} ± {entry['std']:.3f} (n = {len(entry['values'])})" if entry else "")
        lines.append(f"| {labels[encoder]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m sista_monai.experiments.compare``."""
    parser = argparse.ArgumentParser(
        prog="python -m sista_monai.experiments.compare",
        description="Pretrained vs randomly initialised encoder on a downstream bundle (mean ± std over seeds).",
    )
    parser.add_argument("task", choices=sorted(TASKS), help="the downstream task")
    parser.add_argument(
        "--pretrained", default="bundles/pretrain/models/image_encoder.pt", help="the pretrained image_encoder.pt"
    )
    parser.add_argument("--fractions", type=int, nargs="+", default=[1, 10], help="label fractions in percent")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds")
    parser.add_argument("--work-dir", default=None, help="folder of the runs (default: results/compare_<task>)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every run (JSON value), e.g. --set freeze_encoder=false",
    )
    parser.add_argument("--reuse", action="store_true", help="keep runs whose eval/metrics.json exists")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison, write ``summary.json`` and ``table.md``, print the table."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    task = TASKS[args.task]
    overrides = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = _parse_value(value)
    work_dir = Path(args.work_dir or f"results/compare_{args.task}")
    results = run_comparison(task, args.pretrained, args.fractions, args.seeds, work_dir, overrides, args.reuse)
    table = format_table(results, task.metric_label)
    command = "python -m sista_monai.experiments.compare " + " ".join(sys.argv[1:] if argv is None else argv)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "summary.json").write_text(
        json.dumps(
            {
                "task": args.task,
                "metric": task.metric,
                "pretrained_encoder": encoder_source(args.pretrained),
                "overrides": overrides,
                "command": command,
                "runs": [r.__dict__ for r in results],
                "summary": {k: {str(f): v for f, v in by.items()} for k, by in summarise(results).items()},
            },
            indent=2,
        )
        + "\n"
    )
    (work_dir / "table.md").write_text(table + "\n")
    print(table)
    print(f"\n{len(results)} runs in {work_dir}; command: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
