"""Counterfactual twins of demo studies: the same radiograph with one finding moved, the original report kept.

A pointer that reads the report but never the image (an image-free prior per word, or a pointer that reads the
zone and side words of the word's sentence) points at the same patch in a study and in its twin, because the two
share their report. Only a model that looks at the image can follow the finding to its new place. This is the
counterfactual grounding test of METHOD.md §7 and of the pretraining bundle's ``grounding.counterfactual``.

Every finding of a plan is drawn from a random stream of its own (:func:`~.render.render_study`), and the
patient's anatomy, exposure, blur and noise from the study's stream, so re-rendering a plan with one finding moved
changes the image only where that finding was and where it now is. The stored pixels use the study's own
quantisation stream too, so the twin's DICOM differs from the original's only there as well.

Moves (:func:`twin_plans`):

* an opacity or consolidation goes to another lung zone, of the same or the other lung, chosen from the study's own
  random stream among the zones not holding another opacity, the first whose drawn box keeps ``margin`` pixels away
  from the original box;
* a pneumothorax or a pleural effusion goes to the other side (same level).

Only studies with exactly one drawn finding of a lesion class get a twin for that class, so that a word of the
class names one box in each image (with two opacities, pointing at the one that stays would hit in both).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .plan import StudyPlan, _rng
from .render import RenderedStudy, render_study
from .reports import ReportFinding

__all__ = ["LESION_CLASS_FINDINGS", "CounterfactualTwin", "twin_plans", "boxes_overlap"]

LESION_CLASS_FINDINGS: dict[str, tuple[str, ...]] = {
    "opacity": ("Lung Opacity", "Consolidation"),
    "pneumothorax": ("Pneumothorax",),
    "effusion": ("Pleural Effusion",),
}
"""The lesion classes of the pointing games (``sista_monai.transforms.LESION_FINDINGS``, in the same order) and the
finding names each covers."""

_STREAM_COUNTERFACTUAL = 18
_OPACITY_ZONES = tuple((side, level) for side in ("right", "left") for level in ("upper", "middle", "lower"))


@dataclass
class CounterfactualTwin:
    """One twin of a study.

    Attributes:
        lesion_class: the moved finding's lesion class (``"opacity"``, ``"pneumothorax"``, ``"effusion"``).
        plan: the twin's plan (the original's, with the finding moved).
        rendered: the twin's image and geometry.
        original_finding: the moved finding as drawn in the original (``{"name", "zone", "box", "uncertain"}``).
        moved_finding: the same finding as drawn in the twin.
    """

    lesion_class: str
    plan: StudyPlan
    rendered: RenderedStudy
    original_finding: dict[str, Any]
    moved_finding: dict[str, Any]


def boxes_overlap(a: Sequence[int], b: Sequence[int], margin: int = 0) -> bool:
    """Whether two ``[x, y, width, height]`` boxes come closer than ``margin`` pixels (``0``: whether they overlap)."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return not (ax + aw + margin <= bx or bx + bw + margin <= ax or ay + ah + margin <= by or by + bh + margin <= ay)


def _moved(finding: ReportFinding, side: str, level: str) -> ReportFinding:
    return dataclasses.replace(finding, side=side, level=level)


def _candidates(plan: StudyPlan, index: int, seed: int) -> list[ReportFinding]:
    """Where the finding ``plan.findings[index]`` may go, in the order to try."""
    finding = plan.findings[index]
    if finding.name in LESION_CLASS_FINDINGS["opacity"]:
        taken = {(f.side, f.level) for f in plan.findings if f.name in LESION_CLASS_FINDINGS["opacity"]}
        zones = [z for z in _OPACITY_ZONES if z not in taken]
        order = _rng(seed, _STREAM_COUNTERFACTUAL, plan.index).permutation(len(zones))
        return [_moved(finding, *zones[int(k)]) for k in order]
    other = {"right": "left", "left": "right"}[finding.side]
    return [_moved(finding, other, finding.level)]


def twin_plans(
    plan: StudyPlan,
    size: int,
    seed: int,
    margin: int | None = None,
    drawn: Sequence[dict[str, Any]] | None = None,
) -> list[CounterfactualTwin]:
    """The counterfactual twins of one study, one per lesion class with exactly one drawn finding.

    Args:
        plan: the study's plan.
        size: rows = columns, as the study was rendered.
        seed: the dataset seed.
        margin: the gap in pixels that must separate the original and the moved box (default ``size // 16``).
        drawn: the study's findings as :func:`~.render.render_study` drew them (``RenderedStudy.findings``), when the
            caller has them; otherwise the study is rendered again to find its boxes.

    Returns:
        The twins, in :data:`LESION_CLASS_FINDINGS` order; a class whose finding has nowhere to go without
        overlapping its original box gets none.
    """
    margin = size // 16 if margin is None else margin
    drawn_findings = render_study(plan, size, seed).findings if drawn is None else drawn
    twins = []
    for lesion_class, names in LESION_CLASS_FINDINGS.items():
        indices = [k for k, f in enumerate(plan.findings) if f.name in names]
        if len(indices) != 1:
            continue
        index = indices[0]
        original = next(f for f in drawn_findings if f["name"] == plan.findings[index].name)
        for candidate in _candidates(plan, index, seed):
            findings = tuple(candidate if k == index else f for k, f in enumerate(plan.findings))
            twin_plan = dataclasses.replace(plan, findings=findings)
            rendered = render_study(twin_plan, size, seed)
            moved = next(f for f in rendered.findings if f["name"] == candidate.name)
            if min(moved["box"][2:]) <= 0 or boxes_overlap(original["box"], moved["box"], margin):
                continue
            twins.append(CounterfactualTwin(lesion_class, twin_plan, rendered, original, moved))
            break
    return twins
