"""Planning the demo studies: each study's patient, view, sex and findings, drawn before anything is rendered.

Every choice comes from a random stream of its own (:func:`_rng` with a stream identifier and, for a study, its
index), so a study's content does not change with the number of studies ``n``; only the split and the
encoding order depend on ``n``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .reports import ReportFinding

__all__ = ["LABEL_NAMES", "ZONE_NAMES", "StudyPlan", "plan_studies"]

#: Finding labels, CheXpert names, in the order of every ``labels`` vector.
LABEL_NAMES: tuple[str, ...] = (
    "No Finding",
    "Lung Opacity",
    "Consolidation",
    "Pneumothorax",
    "Pleural Effusion",
    "Cardiomegaly",
)
#: The six lung zones, the patient's side first.
ZONE_NAMES: tuple[str, ...] = tuple(f"{s} {lv}" for s in ("right", "left") for lv in ("upper", "middle", "lower"))

# Random-stream identifiers. A study's patient, findings, image and report come from streams of its own
# (keyed by its index), so they do not change with n; only the split and the encoding order depend on n.
_STREAM_PATIENTS, _STREAM_SPLIT, _STREAM_SUBSETS, _STREAM_ENCODING = 1, 2, 3, 4
_STREAM_PLAN, _STREAM_IMAGE, _STREAM_REPORT, _STREAM_PHI, _STREAM_FINDINGS = 11, 12, 13, 14, 16
_STREAM_PATIENT_PHI, _STREAM_PATIENT_SEX = 15, 17


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def _zone_code(side: str, level: str) -> int:
    return {"right": 1, "left": 2}.get(side, 0) * 4 + {"upper": 1, "middle": 2, "lower": 3}.get(level, 0)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


@dataclass(frozen=True)
class StudyPlan:
    """What a study shows, decided before anything is drawn.

    Attributes:
        index: study number, 0-based.
        study_id: the datalist id (``demo_0000``).
        patient: patient number, 0-based (several studies can share one).
        view: ``"PA"`` or ``"AP"``.
        sex: ``"M"`` or ``"F"``.
        findings: the findings to draw and report; empty for a normal study.
    """

    index: int
    study_id: str
    patient: int
    view: str
    sex: str
    findings: tuple[ReportFinding, ...] = ()

    def labels(self) -> list[int]:
        """The finding-label vector in :data:`LABEL_NAMES` order."""
        names = {f.name for f in self.findings}
        positive = {
            "Lung Opacity": bool(names & {"Lung Opacity", "Consolidation"}),
            "Consolidation": "Consolidation" in names,
            "Pneumothorax": "Pneumothorax" in names,
            "Pleural Effusion": "Pleural Effusion" in names,
            "Cardiomegaly": "Cardiomegaly" in names,
        }
        positive["No Finding"] = not any(positive.values())
        return [int(positive[name]) for name in LABEL_NAMES]


def _plan_findings(rng: np.random.Generator) -> tuple[ReportFinding, ...]:
    if rng.random() < 0.35:
        return ()
    while True:
        has_opacity = rng.random() < 0.5
        has_ptx = rng.random() < 0.3
        has_eff = rng.random() < 0.3
        has_cardio = rng.random() < 0.25
        if has_opacity or has_ptx or has_eff or has_cardio:
            break
    findings: list[ReportFinding] = []
    if has_opacity:
        zones = [(s, lv) for s in ("right", "left") for lv in ("upper", "middle", "lower")]
        weights = np.array([0.6, 0.9, 1.5, 0.6, 0.8, 1.4])
        count = 2 if rng.random() < 0.2 else 1
        picked = rng.choice(len(zones), size=count, replace=False, p=weights / weights.sum())
        for z in sorted(int(i) for i in picked):
            dense = rng.random() < 0.5
            uncertain = (not dense) and rng.random() < 0.25
            side, level = zones[z]
            findings.append(ReportFinding("Consolidation" if dense else "Lung Opacity", side, level, "", uncertain))
    ptx_side = ""
    if has_ptx:
        ptx_side = "right" if rng.random() < 0.5 else "left"
        severity = "moderate" if rng.random() < 0.4 else "small"
        uncertain = severity == "small" and rng.random() < 0.15
        findings.append(ReportFinding("Pneumothorax", ptx_side, "upper", severity, uncertain))
    if has_eff:
        side = "right" if rng.random() < 0.5 else "left"
        if side == ptx_side:
            side = "left" if side == "right" else "right"
        severity = "moderate" if rng.random() < 0.4 else "small"
        uncertain = severity == "small" and rng.random() < 0.15
        findings.append(ReportFinding("Pleural Effusion", side, "lower", severity, uncertain))
    if has_cardio:
        findings.append(ReportFinding("Cardiomegaly", "", "", "moderate" if rng.random() < 0.4 else "mild"))
    return tuple(findings)


def _assign_patients(n: int, seed: int) -> list[int]:
    """Patient number of every study: about one patient in five has two or three studies."""
    rng = _rng(seed, _STREAM_PATIENTS)
    patients: list[int] = []
    run = 0
    for i in range(n):
        if i > 0 and run < 3 and rng.random() < 0.22:
            patients.append(patients[-1])
            run += 1
        else:
            patients.append(patients[-1] + 1 if patients else 0)
            run = 1
    return patients


def plan_studies(n: int, seed: int) -> list[StudyPlan]:
    """Decide every study's patient, view, sex and findings.

    Args:
        n: number of studies.
        seed: the dataset seed.

    Returns:
        One :class:`StudyPlan` per study, in order.
    """
    width = max(4, len(str(n - 1)))
    patients = _assign_patients(n, seed)
    plans = []
    for i in range(n):
        rng = _rng(seed, _STREAM_PLAN, i)
        view = "AP" if rng.random() < 0.25 else "PA"
        sex = "F" if _rng(seed, _STREAM_PATIENT_SEX, patients[i]).random() < 0.5 else "M"
        plans.append(StudyPlan(i, f"demo_{i:0{width}d}", patients[i], view, sex, _plan_findings(rng)))
    return plans
