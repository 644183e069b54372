"""What the ablation runs and compares: its pretraining variants, budgets, downstream tasks and contrasts.

The study's design, read by every other part of it (:mod:`sista_monai.experiments.ablation` is the command line):
the variants (:data:`VARIANTS`) and their configuration against the bundle defaults (:func:`same_configurations`),
the budgets, the tasks with their table metric (:data:`TASK_METRICS`), the label fractions of each task, the θ of
the sweep and the contrasts of the effects table (:data:`EFFECTS`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sista_monai.experiments import runs

__all__ = [
    "DOWNSTREAM_BUDGET",
    "EFFECTS",
    "EVALUATE_CONFIG",
    "OFF_SOURCE",
    "PRETRAIN_BUDGET",
    "PRETRAIN_CONFIG",
    "TASK_METRICS",
    "THETAS",
    "VARIANTS",
    "Fractions",
    "Variant",
    "bundle_defaults",
    "same_configurations",
    "sweep_variants",
]


PRETRAIN_CONFIG = "bundles/pretrain/configs/train.json"
EVALUATE_CONFIG = "bundles/pretrain/configs/evaluate.json"


@dataclass(frozen=True)
class Variant:
    """A pretraining variant: its name, its label in the table and its config overrides."""

    name: str
    label: str
    overrides: Mapping[str, Any] = field(default_factory=dict)


OFF_SOURCE: dict[str, Any] = {"similarity_source": "text_frozen"}
"""The report-similarity source of the rows with SIA off (θ = 2), whose loss it cannot change."""


VARIANTS: tuple[Variant, ...] = (
    # SIA off: θ above every report similarity (cosines and label agreements are at most 1) flags nothing, and
    # the SIA loss is then the standard InfoNCE; STA off: its weight is 0. With SIA off the report similarity
    # feeds only the flag metrics, so these rows pin it (OFF_SOURCE): a change of the headline's source then
    # leaves their runs valid for --reuse.
    Variant(
        "clip",
        "CLIP only (SIA off: θ = 2; STA off: λ_token = 0)",
        {"sia_threshold": 2.0, "lambda_token": 0.0} | OFF_SOURCE,
    ),
    Variant("clip_sia", "+ SIA (the headline's report similarity)", {"lambda_token": 0.0}),
    Variant("clip_sta", "+ STA", {"sia_threshold": 2.0} | OFF_SOURCE),
    Variant(
        "clip_sta_within",
        "+ STA within pairs only (SIA off: θ = 2; sta_contrast = within)",
        {"sia_threshold": 2.0, "sta_contrast": "within"} | OFF_SOURCE,
    ),
    Variant("sista", "SISTA (the bundle default: SIA + STA)", {}),
    Variant(
        "sista_oracle",
        "SISTA, SIA from the labels oracle (θ 0.95: identical finding sets)",
        {"similarity_source": "labels", "sia_threshold": 0.95},
    ),
    Variant("sista_dense", "SISTA, dense STA (σ = 0)", {"sta_sparsity_threshold": 0.0}),
    # 1/P with the demo's 8 x 8 patch grid (a None override would be dropped by MONAI's runner)
    Variant("sista_sigma_1p", "SISTA, STA σ = 1/P (SPARC's; 1/64 here)", {"sta_sparsity_threshold": 1 / 64}),
    Variant("sista_sigma_0.25", "SISTA, STA σ = 0.25", {"sta_sparsity_threshold": 0.25}),
    Variant("sista_sigma_0.75", "SISTA, STA σ = 0.75", {"sta_sparsity_threshold": 0.75}),
    Variant(
        "sista_text_online", "SISTA, similarity from the online text encoder", {"similarity_source": "text_online"}
    ),
    # SIA's report similarity (issue 25): the rule labeler's finding vectors (the headline since issue 25) against
    # the frozen MLM encoder (the headline before it, θ 0.76 chosen on validation)
    Variant(
        "sista_findings",
        "SISTA, similarity from the finding labeler (similarity_source = findings)",
        {"similarity_source": "findings"},
    ),
    Variant(
        "sista_text_frozen",
        "SISTA, similarity from the frozen MLM encoder (centred cosine, θ 0.76)",
        {"similarity_source": "text_frozen", "sia_threshold": 0.76},
    ),
    # SIA at a larger global batch: a row holds 63 unpaired reports instead of 15, so about four times the false
    # negatives to remove. Same epochs (the same studies seen, a quarter of the optimiser steps) and learning rate;
    # SIA's effect at 64 is sista_b64 against clip_sta_b64, run on the same budget
    Variant("clip_sta_b64", "+ STA, global batch 64 (SIA off)", {"sia_threshold": 2.0, "batch_size": 64} | OFF_SOURCE),
    Variant("sista_b64", "SISTA, global batch 64", {"batch_size": 64}),
    # STA's terms (issue 24): the within-pair term alone can be solved by a position code without the image; the
    # cross-image term contrasts each content word across the images of the batch
    Variant("sista_within", "SISTA, STA within pairs only (sta_contrast = within)", {"sta_contrast": "within"}),
    Variant("sista_cross", "SISTA, STA across images only (sta_contrast = cross)", {"sta_contrast": "cross"}),
    Variant(
        "sista_both",
        "SISTA, STA within pairs and across images (sta_contrast = both)",
        {"sta_contrast": "both"},
    ),
    Variant(
        "sista_shuffled",
        "control: SISTA with STA on mismatched image–report pairs (sta_pairs = shuffled)",
        {"sta_pairs": "shuffled"},
    ),
)
"""The pretraining variants; ``random`` (no pretraining) is added to the downstream rows. The σ variants with
``sista`` (σ = 0.5, the bundle default) and ``sista_dense`` (σ = 0) make the σ sweep. ``sista`` and ``clip_sta``
run the bundle's defaults (``bundles/pretrain/configs/train.json``, :func:`bundle_defaults`), e.g. its
``sta_contrast``; a variant that sets a key to its default (``sista_both`` while the default is ``both``) runs
the same configuration as ``sista``, which the page notes (:func:`same_configurations`)."""


PRETRAIN_BUDGET: dict[str, Any] = {"epochs": 10, "val_interval": 5, "save_interval": 5, "warmup_epochs": 1}
"""Pretraining budget of the study (the bundle default is 30 epochs): sized for 2 CPU cores."""


DOWNSTREAM_BUDGET: dict[str, dict[str, Any]] = {
    "classification": {"epochs": 4, "min_iterations_per_epoch": 20},
    "segmentation": {"epochs": 12, "min_iterations_per_epoch": 27},
    "detection": {"epochs": 4, "min_iterations_per_epoch": 20},
}
"""Downstream budget of the study per task (the bundles' defaults: 30 x 10 steps for classification, 12 x 27 for
segmentation and detection). Segmentation gets its bundle's default 324 steps: at 80 the probes tried predicted a
pneumothorax on most images, far below the all-empty prediction, and at 216 five of the 35 runs of the issue-15
study still sat at the all-empty prediction (their best validation epoch)."""


TASK_METRICS = {
    "classification": ("auroc", "RSNA-like AUROC"),
    "segmentation": ("mean_dice", "SIIM-like Dice"),
    "detection": ("map", "detection mAP"),
}


THETAS = tuple(round(0.02 * k, 2) for k in range(51))


def sweep_variants(variants: Sequence[Variant], defaults: Mapping[str, Any]) -> dict[str, Variant]:
    """The run whose flags the θ sweep re-scores, per report-similarity source: the first variant of the study (in
    :data:`VARIANTS` order) with that source and SIA on (θ ≤ 1). The flags depend on the source and the run's
    frozen or online text features, not on the variant's other parts."""
    chosen: dict[str, Variant] = {}
    for variant in variants:
        config = {**defaults, **variant.overrides}
        if float(config.get("sia_threshold", 0.0)) <= 1.0:
            chosen.setdefault(str(config.get("similarity_source")), variant)
    return chosen


Fractions = Sequence[int] | Mapping[str, Sequence[int]]
"""Downstream label fractions (percent): one list for every task, or a list per task."""


def _pairs(tasks: Sequence[str], fractions: Fractions) -> list[tuple[str, int]]:
    """``(task, fraction)`` in table order; ``fractions`` is one list for every task or a list per task."""
    return [
        (task, fraction)
        for task in tasks
        for fraction in (fractions.get(task, ()) if isinstance(fractions, Mapping) else fractions)
    ]


def bundle_defaults(config_file: str | Path = PRETRAIN_CONFIG) -> dict[str, Any]:
    """The literal top-level values of the pretraining config (:func:`sista_monai.experiments.runs.bundle_defaults`)."""
    return runs.bundle_defaults(config_file)


def _pretrain_config(variant: Variant, seed: int, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """What a pretraining run is configured with: the bundle defaults, the budget, the overrides, the variant's."""
    return runs.as_json({**bundle_defaults(), **PRETRAIN_BUDGET, **overrides, **variant.overrides, "seed": seed})


def same_configurations(variants: Sequence[Variant], overrides: Mapping[str, Any]) -> list[list[str]]:
    """Groups (two or more) of ``variants`` that run the same configuration with the current bundle defaults.

    E.g. ``[["sista", "sista_both"]]`` while ``train.json`` has ``sta_contrast = both``: their rows and any
    contrast between them differ by the seed-free noise of the runs only.
    """
    groups: dict[str, list[str]] = {}
    for variant in variants:
        key = json.dumps(_pretrain_config(variant, 0, overrides), sort_keys=True)
        groups.setdefault(key, []).append(variant.name)
    return [names for names in groups.values() if len(names) > 1]


EFFECTS: tuple[tuple[str, str, str], ...] = (
    ("+ SIA (vs CLIP only)", "clip_sia", "clip"),
    ("+ STA (vs CLIP only)", "clip_sta", "clip"),
    ("+ STA within pairs (vs CLIP only)", "clip_sta_within", "clip"),
    ("SIA and STA (SISTA vs CLIP only)", "sista", "clip"),
    ("SIA within SISTA (SISTA vs + STA)", "sista", "clip_sta"),
    ("STA within SISTA (SISTA vs + SIA)", "sista", "clip_sia"),
    ("text SIA vs the labels oracle (SISTA vs SISTA oracle)", "sista", "sista_oracle"),
    (
        "SIA's similarity: the headline's vs the frozen encoder (SISTA vs SISTA text_frozen)",
        "sista",
        "sista_text_frozen",
    ),
    ("SIA within SISTA at global batch 64 (SISTA vs + STA, both at 64)", "sista_b64", "clip_sta_b64"),
    ("sparsity (SISTA vs dense STA, σ = 0)", "sista", "sista_dense"),
    ("cross-image STA (SISTA vs within-pair STA)", "sista", "sista_within"),
    ("cross-image term alone vs within-pair term alone (SISTA cross vs within)", "sista_cross", "sista_within"),
    ("alignment (SISTA vs shuffled-pair STA)", "sista", "sista_shuffled"),
    ("pretraining (SISTA vs random initialisation)", "sista", "random"),
)
"""The contrasts of the effects table: (label, variant, baseline). ``sista`` runs the bundle defaults, so
"cross-image STA" contrasts the default ``sta_contrast`` (``both`` today) with ``within``; "alignment" contrasts
STA on the true image–report pairs with STA on mismatched ones (the shuffled-pair control)."""
