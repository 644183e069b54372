"""The ablation's page: ``ablation.md`` written under ``--out`` and copied, with its plots, to ``--publish``.

The page states the command, the hardware, the wall time, the data and model sizes and the bundle defaults, then
the tables (:mod:`.tables`), the probes that learned nothing (:mod:`.controls`) and the plots (:mod:`.plots`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sista_monai.experiments.effects import ESTABLISHED_LEGEND
from sista_monai.experiments.tables import format_probe_fractions, format_validation
from sista_monai.experiments.variants import PRETRAIN_CONFIG, Fractions, _pairs

__all__ = ["describe_sizes", "page_text", "write_page"]


def describe_sizes(
    pretrain_overrides: Mapping[str, Any], out: Path, tasks: Sequence[str], fractions: Fractions, seed: int
) -> str:
    """The study's data and model sizes: pretraining's from its config and datalist, each downstream task's from
    the test reports of its random-initialisation runs (``training_images`` and the number of test images)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(PRETRAIN_CONFIG)
    parser.update(dict(pretrain_overrides))
    data_root = Path(parser.get_parsed_content("data_root"))
    splits = json.loads((data_root / "datalist_pretrain.json").read_text())
    counts = "/".join(str(len(splits[s])) for s in ("training", "validation", "test"))
    downstream = []
    for task in tasks:
        shown = [
            f
            for _, f in _pairs([task], fractions)
            if (out / task / f"random_f{f}_s{seed}" / "eval" / "metrics.json").is_file()
        ]
        if not shown:
            continue
        reports = [
            json.loads((out / task / f"random_f{f}_s{seed}" / "eval" / "metrics.json").read_text()) for f in shown
        ]
        labelled = ", ".join(f"{f} % = {r['training_images']}" for f, r in zip(shown, reports, strict=True))
        downstream.append(
            f"{task} {labelled} labelled training images, {reports[0].get('n', reports[0].get('images'))} test images"
        )
    encoder = parser.get_parsed_content("image_encoder")
    text = parser.get_parsed_content("text_encoder")
    size = parser.get_parsed_content("image_size")
    return (
        f"Data: `{data_root}`, {counts} training/validation/test studies (image + report) for pretraining"
        + "".join(f"; {d}" for d in downstream)
        + f". Images {size}×{size} px; image encoder {sum(p.numel() for p in encoder.parameters()) / 1e6:.2f} M "
        f"parameters, text encoder {sum(p.numel() for p in text.parameters()) / 1e6:.2f} M parameters."
    )


def _defaults_note(defaults: Mapping[str, Any], same: Sequence[Sequence[str]]) -> str:
    """The page's line on the bundle defaults of the keys the variants set, and on variants that coincide."""
    text = (
        "Bundle defaults (`bundles/pretrain/configs/train.json`) of the keys the variants set, which the SISTA row "
        "runs: " + ", ".join(f"{key} = {json.dumps(value)}" for key, value in defaults.items()) + "."
    )
    if same:
        text += " Same configuration at these defaults (their rows differ by run-to-run noise only): " + "; ".join(
            " = ".join(group) for group in same
        )
        text += "."
    return text


def _probes_section(results: Mapping[str, Any], tasks: Sequence[str], fractions: Fractions) -> str:
    """The page's probe fractions (:func:`format_probe_fractions`) and validation table (:func:`format_validation`)."""
    if not any(task in entry for entry in results["variants"].values() for task in tasks):
        return "No downstream runs."
    lines = format_probe_fractions(results, tasks, fractions)
    return (
        "\n".join(f"- {line}" for line in lines)
        + "\n\nThe probe fraction of a task is the smallest label fraction at which every encoder's probe (random "
        "initialisation included) beats the constant predictor on the *validation* split; its columns are marked "
        "(probe fraction) and compare encoders whose probes all learned something. The other columns stay, with the "
        "image-free baseline beside each (last row of the results table). Validation scores (the bundles write them "
        "to their TensorBoard logs only): mean ± sample std over seeds of the final validation epoch's, and in "
        "brackets the mean of the best epoch's (the tested checkpoint's, biased upwards by that selection).\n\n"
        + format_validation(results, tasks, fractions)
    )


def page_text(
    results: Mapping[str, Any],
    tasks: Sequence[str],
    fractions: Fractions,
    pretrain_overrides: Mapping[str, Any],
    out: Path,
    table: str,
    effects: str,
    plots: Sequence[Path],
) -> str:
    """``ablation.md``: ``summary.json``'s content (``results``: the command, the invocations, the hardware, the
    seeds, the budgets, the degenerate runs, the means below baseline) with the results ``table`` and the
    ``effects`` table (:mod:`.tables`) and the ``plots``."""
    command = results["command"]
    invocations = results["invocations"]
    same = results["same_configurations"]
    degenerate = results["degenerate_runs"]
    below = results["below_baseline"]
    history = "; ".join(
        f"{i['seconds'] / 60:.1f} min ({'--reuse, ' if i['reuse'] else ''}{i['threads']} thread(s), finished {i['finished']})"
        if "threads" in i
        else f"{i['seconds'] / 60:.1f} min ({'--reuse, ' if i['reuse'] else ''}finished {i['finished']})"
        for i in invocations
    )
    return (
        "# Ablation on the demo data\n\n"
        f"Command: `{command}`  \nHardware: {results['hardware']}  \nWall time of each invocation on this output "
        f"folder: {history}; {results['run_seconds'] / 60:.1f} min summed over every run's training and evaluation  \n"
        f"Seeds: {results['seeds']}; pretraining overrides {results['pretrain_budget']}; downstream overrides "
        f"{results['downstream_budget']} (frozen encoder); results: mean ± sample std over seeds; effects: mean paired "
        "difference [Student-t 95 % interval], paired t-test p; SIA flag precision is n/a when nothing is flagged (SIA off).  \n"
        + describe_sizes(pretrain_overrides, out, tasks, fractions, results["seeds"][0])
        + "  \n"
        + _defaults_note(results["bundle_defaults"], same)
        + "\n\n"
        "## Results\n\n" + table + "\n\n"
        "The lesion text pointer reads the report's sentence but never the image; the counterfactual follow rate is the "
        "share of trials in which a word's best patch follows its finding when the finding is moved in a twin image (the "
        "pointers that never see the image score near 0 there by construction: `counterfactual_prior` and "
        "`counterfactual_text_pointer` in summary.json).\n\n"
        "## Probes\n\n"
        + _probes_section(results, tasks, fractions)
        + "\n\n## Effects\n\nDifference of a variant from its baseline, seed by seed (each seed's runs of the two "
        "variants share their seed): mean difference [Student-t 95 % interval of the mean over seeds, n - 1 degrees of "
        "freedom], two-sided paired t-test p, and the number of seeds where the variant scored higher. With 5 seeds a "
        "percentile bootstrap interval is too narrow (it covers the true mean about 83 % of the time), so the cells show "
        "the t-interval; the bootstrap interval stays in summary.json (`effects`: `low`, `high`).  \n"
        + ESTABLISHED_LEGEND
        + "\n\n"
        + effects
        + "\n\n## Degenerate downstream probes\n\n"
        + (
            "\n".join(f"- {line}" for line in degenerate)
            if degenerate
            else "None: every downstream run's probe ranks, segments or detects something."
        )
        + "\n\n## Below the image-free baseline\n\nMeans over seeds that do not beat the last row of the results table.\n\n"
        + ("\n".join(f"- {line}" for line in below) if below else "None: every mean beats its image-free baseline.")
        + "\n\n## Plots\n\n"
        + "\n".join(f"![{p.stem}]({p.name})" for p in plots)
        + "\n"
    )


def write_page(text: str, plots: Sequence[Path], out: Path, publish: str | None) -> None:
    """Write ``<out>/ablation.md``; with ``publish``, copy it there and the plots beside it."""
    (out / "ablation.md").write_text(text)
    if publish:
        target = Path(publish)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        for plot in plots:
            shutil.copy(plot, target.parent / plot.name)
