"""Ablation study on the demo data: does each part of SISTA earn its place?

::

    python -m sista_monai.experiments ablation [--seeds 0 1 2 3 4] [--out results/ablation] [--variants ...]
        [--tasks classification segmentation detection] [--fractions 1 10] [--reuse] [--publish FILE]
        [--set-pretrain KEY=VALUE ...] [--set-downstream KEY=VALUE ...]

For every variant (:data:`~sista_monai.experiments.variants.VARIANTS`) and seed, ``bundles/pretrain/configs/train.json`` is run with the
variant's overrides and the budget overrides into ``<out>/pretrain/<variant>_s<seed>`` (its ``eval/metrics.json``
gives lesion and zone grounding with the image-free prior, semantic precision@5, Recall@5, the SIA flag precision
and recall and the STA patches kept); then every downstream
bundle (linear probe / frozen encoder, as the bundles' defaults) is trained at each label fraction on that
run's ``models/image_encoder.pt`` and, once per seed, on a random initialisation, into
``<out>/<task>/<variant>_f<fraction>_s<seed>``; each downstream run's validation score (final and best epoch, from
its TensorBoard log: :mod:`sista_monai.experiments.probes`) is kept beside its test metric, and each task's probe
fraction, the smallest label fraction at which every encoder's probe beats the constant predictor on validation,
is stated. A θ sweep of the SIA flags (rate and precision against the demo's finding labels) runs on the test
split with the SISTA runs of every similarity source. Effects (:data:`~sista_monai.experiments.variants.EFFECTS`) are paired differences over seeds
with a Student-t 95 % interval, marked established where it excludes 0 and p < 0.05
(:mod:`sista_monai.experiments.effects`).

Outputs under ``<out>``: ``ablation.md`` (the table, the command, the hardware, the wall time, the sizes),
``summary.json`` (every run's values), ``plot_<metric>.png`` per downstream metric and ``theta_sweep.png``;
``--publish`` copies ``ablation.md`` (e.g. to ``bundles/pretrain/docs/ablation.md``) with the plots beside it.
Every run keeps its bundle folder and the configuration it ran with (``ablation_config.json``), so ``--reuse``
resumes an interrupted study and redoes only the runs whose configuration changed since (a new bundle default
included), the pretraining runs whose report predates the counterfactual metrics, and the probes of a redone
pretraining.

This module is the command line; the study's parts are modules of their own: its design (:mod:`.variants`),
running it (:mod:`.runner`), the image-free baselines and degenerate probes (:mod:`.controls`), the statistics
(:mod:`.effects`, :mod:`.probes`), the tables (:mod:`.tables`), the plots (:mod:`.plots`) and the page
(:mod:`.publish`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sista_monai.experiments.controls import below_baseline, degenerate_runs
from sista_monai.experiments.plots import _plots
from sista_monai.experiments.probes import probe_fraction
from sista_monai.experiments.publish import page_text, write_page
from sista_monai.experiments.runner import _run_seconds, run_ablation
from sista_monai.experiments.tables import effects_summary, format_effects, format_table
from sista_monai.experiments.variants import (
    DOWNSTREAM_BUDGET,
    PRETRAIN_BUDGET,
    TASK_METRICS,
    VARIANTS,
    bundle_defaults,
    same_configurations,
)

__all__ = ["REPORTED_DEFAULTS", "build_parser", "downstream_budgets", "main", "task_fractions"]


def task_fractions(fractions: Sequence[int], items: Sequence[str], tasks: Sequence[str]) -> dict[str, list[int]]:
    """The label fractions of each task: ``fractions``, or ``TASK=F[,F...]`` for the tasks named in ``items``."""
    per_task = {task: list(fractions) for task in tasks}
    for item in items:
        task, sep, values = item.partition("=")
        if not sep or task not in TASK_METRICS:
            raise SystemExit(
                f"--task-fractions {item!r}: expected TASK=F[,F...] with TASK one of {', '.join(TASK_METRICS)}"
            )
        if task in per_task:
            per_task[task] = [int(v) for v in values.split(",") if v]
    return per_task


def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def downstream_budgets(items: Sequence[str], tasks: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each task's downstream overrides: :data:`DOWNSTREAM_BUDGET` updated by ``[TASK:]KEY=VALUE`` items.

    An item without a task prefix applies to every task; ``segmentation:epochs=12`` to that task only.
    """
    budgets = {task: dict(DOWNSTREAM_BUDGET.get(task, {})) for task in tasks}
    for key, value in _parse_overrides(items).items():
        task, sep, name = key.partition(":")
        if not sep:
            for budget in budgets.values():
                budget[key] = value
        elif task not in TASK_METRICS:
            raise SystemExit(f"--set-downstream {key}: unknown task {task!r} (one of {', '.join(TASK_METRICS)})")
        elif task in budgets:
            budgets[task][name] = value
    return budgets


REPORTED_DEFAULTS = ("sta_contrast", "sta_pairs", "patch_centering")
"""Bundle defaults the page states even when no variant run sets them (they shape what ``sista`` runs)."""


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m sista_monai.experiments ablation``."""
    parser = argparse.ArgumentParser(
        prog="python -m sista_monai.experiments ablation", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds (pretraining and downstream)"
    )
    parser.add_argument("--out", default="results/ablation", help="output folder")
    parser.add_argument("--variants", nargs="+", default=[v.name for v in VARIANTS], choices=[v.name for v in VARIANTS])
    parser.add_argument("--tasks", nargs="*", default=list(TASK_METRICS), choices=list(TASK_METRICS))
    parser.add_argument(
        "--fractions", type=int, nargs="+", default=[1, 10], help="downstream label fractions (percent)"
    )
    parser.add_argument(
        "--task-fractions",
        nargs="+",
        default=[],
        metavar="TASK=F[,F]",
        help="other label fractions for some tasks, e.g. segmentation=10 (its most expensive runs)",
    )
    parser.add_argument(
        "--no-random",
        action="store_true",
        help="skip the random-initialisation runs (another invocation on --out runs them)",
    )
    parser.add_argument(
        "--set-pretrain", action="append", default=[], metavar="KEY=VALUE", help="pretraining override (JSON value)"
    )
    parser.add_argument(
        "--set-downstream",
        action="append",
        default=[],
        metavar="[TASK:]KEY=VALUE",
        help="override of every downstream run, or of one task's runs with a TASK: prefix (e.g. segmentation:epochs=12)",
    )
    parser.add_argument(
        "--downstream-variants",
        nargs="+",
        default=None,
        choices=[v.name for v in VARIANTS],
        help="the variants trained downstream (default: every variant); the others give pretraining metrics only",
    )
    parser.add_argument("--no-sweep", action="store_true", help="skip the θ sweep")
    parser.add_argument("--reuse", action="store_true", help="keep finished runs (resume an interrupted study)")
    parser.add_argument(
        "--publish",
        default=None,
        help="also copy ablation.md (and the plots) there, e.g. bundles/pretrain/docs/ablation.md",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study and write the table, the plots and ``summary.json``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pretrain_overrides, downstream_overrides = (
        _parse_overrides(args.set_pretrain),
        downstream_budgets(args.set_downstream, args.tasks),
    )
    fractions = task_fractions(args.fractions, args.task_fractions, args.tasks)
    variants = [v for v in VARIANTS if v.name in args.variants]
    results = run_ablation(
        out,
        args.seeds,
        variants,
        args.tasks,
        fractions,
        pretrain_overrides,
        downstream_overrides,
        args.reuse,
        not args.no_sweep,
        args.downstream_variants,
        not args.no_random,
    )
    wall = time.perf_counter() - start
    degenerate = degenerate_runs(out, args.tasks)
    results["degenerate_runs"] = degenerate
    results["below_baseline"] = below_baseline(results, args.tasks, fractions)
    results["probe_fractions"] = {task: probe_fraction(results, task) for task in args.tasks}
    results["effects"] = effects_summary(results, args.tasks, fractions)
    defaults = bundle_defaults()
    shown = {key for v in variants for key in v.overrides} | (set(REPORTED_DEFAULTS) & defaults.keys())
    results["bundle_defaults"] = {key: defaults.get(key) for key in sorted(shown)}
    results["same_configurations"] = same_configurations(variants, pretrain_overrides)
    command = "python -m sista_monai.experiments ablation " + " ".join(sys.argv[1:] if argv is None else argv)
    table = format_table(results, args.tasks, fractions)
    plots = _plots(results, args.tasks, fractions, out)
    results.update(
        {
            "command": command,
            "seconds": wall,
            "run_seconds": _run_seconds(out),
            "hardware": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}",
            "pretrain_budget": {**PRETRAIN_BUDGET, **pretrain_overrides},
            "downstream_budget": downstream_overrides,
            "seeds": list(args.seeds),
        }
    )
    invocations_file = out / "invocations.json"
    invocations = json.loads(invocations_file.read_text()) if invocations_file.is_file() else []
    import torch

    invocations.append(
        {
            "command": command,
            "seconds": wall,
            "reuse": bool(args.reuse),
            "threads": torch.get_num_threads(),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
    )
    invocations_file.write_text(json.dumps(invocations, indent=2) + "\n")
    results["invocations"] = invocations
    (out / "summary.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    effects = format_effects(results, args.tasks, fractions)
    text = page_text(results, args.tasks, fractions, pretrain_overrides, out, table, effects, plots)
    write_page(text, plots, out, args.publish)
    print(table)
    print()
    print(effects)
    print(f"\n{out / 'ablation.md'} written in {wall / 60:.1f} min")
    return 0
