"""Report grammar of the synthetic demo data: MIMIC-CXR-style free text from known findings.

:func:`compose_report` writes a report with the sections ``FINAL REPORT``, ``EXAMINATION:``,
``INDICATION:``, ``COMPARISON:``, ``FINDINGS:`` (left out of about one report in ten, as in MIMIC-CXR) and
``IMPRESSION:``. Phrasing varies (zone words such as "right lower lobe", "left apical", "lingula";
negations such as "no pneumothorax", "without effusion"; hedges such as "cannot be excluded"), while the
normal studies draw from a few heavily weighted wordings so that many of them share an identical FINDINGS
and IMPRESSION text: the false negatives that SIA is designed to stop pushing apart.

Rules the grammar keeps, so that text, labels and image agree:

* ``right``/``left`` are the **patient's** sides (a frontal PA image shows the patient's right on the
  image's left).
* Every sentence of FINDINGS and IMPRESSION is either *positive* (it names only findings that were drawn and
  contains no negation cue) or *negative* (every finding word in it is negated with ``no``, ``without`` or
  ``not``). A sentence-level negation check therefore recovers the labels exactly.
* Hedged mentions ("may represent", "cannot be excluded", "possible") are only written about findings that
  were drawn, and are labelled 1 (the CheXpert "U-ones" policy): the label follows the image.
* The IMPRESSION names every positive finding, so a report without FINDINGS still carries all labels.
* The INDICATION is the clinical question ("evaluate for pneumonia") and says nothing about the labels.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ReportFinding",
    "compose_report",
    "FINDING_WORDS",
    "NEGATION_CUES",
]

#: Words whose presence in a sentence mentions a finding (lower case, matched as substrings of words).
FINDING_WORDS: dict[str, tuple[str, ...]] = {
    "Lung Opacity": ("opacity", "opacities", "consolidation", "pneumonia", "airspace disease", "infiltrate"),
    "Pneumothorax": ("pneumothorax",),
    "Pleural Effusion": ("effusion",),
    "Cardiomegaly": ("cardiomegaly", "enlarged", "enlargement"),
}

#: Cues that make a sentence negative. Hedges ("cannot be excluded") are deliberately not among them.
NEGATION_CUES: tuple[str, ...] = ("no", "without", "not")

_ZONE_NOUNS: dict[tuple[str, str], tuple[str, ...]] = {
    ("right", "upper"): ("right upper lobe", "right apex", "right upper zone", "right upper lung"),
    ("right", "middle"): ("right middle lobe", "right mid lung", "right perihilar region", "right middle zone"),
    ("right", "lower"): ("right lower lobe", "right lung base", "right base", "right lower zone"),
    ("left", "upper"): ("left upper lobe", "left apex", "left upper zone", "left upper lung"),
    ("left", "middle"): ("lingula", "left mid lung", "left perihilar region", "left middle zone"),
    ("left", "lower"): ("left lower lobe", "left lung base", "left base", "left lower zone"),
}

_ZONE_ADJECTIVES: dict[tuple[str, str], tuple[str, ...]] = {
    ("right", "upper"): ("right upper lobe", "right apical", "right upper zone"),
    ("right", "middle"): ("right middle lobe", "right mid lung", "right perihilar"),
    ("right", "lower"): ("right lower lobe", "right basilar", "right base"),
    ("left", "upper"): ("left upper lobe", "left apical", "left upper zone"),
    ("left", "middle"): ("lingular", "left mid lung", "left perihilar"),
    ("left", "lower"): ("left lower lobe", "left basilar", "left base"),
}

_NORMAL_FINDINGS: tuple[tuple[float, str], ...] = (
    (
        0.50,
        "The lungs are clear. The cardiomediastinal silhouette is within normal limits. "
        "No pleural effusion or pneumothorax.",
    ),
    (0.20, "Lungs are clear. Heart size is normal. No pleural effusion or pneumothorax."),
    (0.15, "The lungs are clear without focal consolidation, effusion, or pneumothorax. The heart size is normal."),
    (
        0.10,
        "No focal consolidation, pleural effusion, or pneumothorax. Normal cardiomediastinal silhouette. "
        "No acute osseous abnormality.",
    ),
    (
        0.05,
        "The lungs are well expanded and clear. The cardiomediastinal and hilar contours are normal. "
        "There is no pleural effusion or pneumothorax.",
    ),
)

_NORMAL_IMPRESSIONS: tuple[tuple[float, str], ...] = (
    (0.55, "No acute cardiopulmonary process."),
    (0.15, "No acute cardiopulmonary abnormality."),
    (0.10, "No acute intrathoracic process."),
    (0.08, "Normal chest radiograph."),
    (0.07, "No evidence of pneumonia."),
    (0.05, "No radiographic evidence of acute cardiopulmonary disease."),
)

_INDICATION_COMPLAINTS = (
    "cough",
    "fever",
    "shortness of breath",
    "chest pain",
    "hypoxia",
    "productive cough and fever",
    "dyspnea on exertion",
    "pleuritic chest pain",
)
_INDICATION_QUESTIONS = (
    "Evaluate for pneumonia.",
    "Evaluate for pneumothorax.",
    "Assess for effusion.",
    "Rule out acute process.",
    "Evaluate for acute cardiopulmonary process.",
    "",
)
_COMPARISONS = ("None.", "___.", "Chest radiograph from ___.")


@dataclass(frozen=True)
class ReportFinding:
    """A finding the report must describe.

    Attributes:
        name: ``"Lung Opacity"`` (hazy opacity), ``"Consolidation"`` (dense opacity), ``"Pneumothorax"``,
            ``"Pleural Effusion"`` or ``"Cardiomegaly"``.
        side: the patient's side, ``"right"`` or ``"left"`` (empty for cardiomegaly).
        level: ``"upper"``, ``"middle"`` or ``"lower"`` (empty when not applicable).
        severity: ``"small"``/``"moderate"`` (pneumothorax, effusion), ``"mild"``/``"moderate"``
            (cardiomegaly); empty for opacities.
        uncertain: write a hedged mention (the label stays 1).
    """

    name: str
    side: str = ""
    level: str = ""
    severity: str = ""
    uncertain: bool = False


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _pick_weighted(rng: np.random.Generator, options: Sequence[tuple[float, str]]) -> str:
    weights = np.array([w for w, _ in options], dtype=np.float64)
    return options[int(rng.choice(len(options), p=weights / weights.sum()))][1]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _opacity_sentences(f: ReportFinding, rng: np.random.Generator) -> tuple[str, str]:
    """(FINDINGS sentence, IMPRESSION sentence) for an opacity."""
    noun = _pick(rng, _ZONE_NOUNS[(f.side, f.level)])
    adj = _pick(rng, _ZONE_ADJECTIVES[(f.side, f.level)])
    if f.name == "Consolidation":
        findings = _pick(
            rng,
            (
                f"There is a {_pick(rng, ('focal', 'dense'))} consolidation in the {noun}.",
                f"{_cap(adj)} consolidation is {_pick(rng, ('concerning for', 'compatible with'))} pneumonia.",
                f"Focal airspace consolidation is seen in the {noun}.",
            ),
        )
        impression = _pick(
            rng,
            (
                f"{_cap(adj)} pneumonia.",
                f"{_cap(adj)} consolidation.",
                f"{_cap(adj)} consolidation concerning for pneumonia.",
            ),
        )
    elif f.uncertain:
        findings = _pick(
            rng,
            (
                f"Subtle opacity in the {noun} may reflect atelectasis, though infection cannot be excluded.",
                f"Faint {adj} opacity; early pneumonia cannot be excluded.",
                f"Possible {adj} opacity, which could represent an early pneumonia.",
            ),
        )
        impression = _pick(
            rng, (f"{_cap(adj)} opacity; pneumonia cannot be excluded.", f"Possible early {adj} pneumonia.")
        )
    else:
        findings = _pick(
            rng,
            (
                f"There is {_pick(rng, ('a patchy', 'a hazy', 'an ill-defined'))} opacity in the {noun}.",
                f"{_cap(adj)} airspace opacity is {_pick(rng, ('concerning for', 'suspicious for'))} infection.",
                f"Patchy opacities are present in the {noun}.",
            ),
        )
        impression = _pick(
            rng,
            (
                f"{_cap(adj)} opacity, {_pick(rng, ('concerning for', 'compatible with'))} pneumonia.",
                f"{_cap(adj)} opacity, likely infectious.",
            ),
        )
    return findings, impression


def _pneumothorax_sentences(f: ReportFinding, rng: np.random.Generator) -> tuple[str, str]:
    size, side = f.severity or "small", f.side
    if f.uncertain:
        findings = _pick(
            rng,
            (
                f"A thin lucency at the {side} apex may represent a small pneumothorax.",
                f"Possible small {side} apical pneumothorax.",
            ),
        )
        return findings, f"Possible small {side} apical pneumothorax."
    findings = _pick(
        rng,
        (
            f"There is a {size} {side} apical pneumothorax.",
            f"{_cap(size)} {side}-sided pneumothorax with a visible pleural line at the apex.",
            f"A {size} {side} apicolateral pneumothorax is present.",
        ),
    )
    return findings, _pick(rng, (f"{_cap(size)} {side} pneumothorax.", f"{_cap(size)} {side} apical pneumothorax."))


def _effusion_sentences(f: ReportFinding, rng: np.random.Generator) -> tuple[str, str]:
    size, side = f.severity or "small", f.side
    if f.uncertain:
        findings = _pick(
            rng,
            (
                f"Blunting of the {side} costophrenic angle may reflect a small effusion.",
                f"Possible small {side} pleural effusion.",
            ),
        )
        return findings, f"Possible small {side} pleural effusion."
    findings = _pick(
        rng,
        (
            f"There is a {size} {side} pleural effusion.",
            f"{_cap(size)} {side} pleural effusion with blunting of the costophrenic angle.",
            f"Blunting of the {side} costophrenic angle is consistent with a {size} pleural effusion.",
            f"{_cap(size)} {side} pleural effusion with a meniscus.",
        ),
    )
    return findings, f"{_cap(size)} {side} pleural effusion."


def _cardiomegaly_sentences(f: ReportFinding, rng: np.random.Generator) -> tuple[str, str]:
    degree = f.severity or "mild"
    adverb = "mildly" if degree == "mild" else "moderately"
    findings = _pick(
        rng,
        (
            f"The heart is {adverb} enlarged.",
            f"{_cap(degree)} cardiomegaly.",
            "The cardiac silhouette is enlarged.",
            f"There is {degree} enlargement of the cardiac silhouette.",
        ),
    )
    return findings, _pick(rng, ("Cardiomegaly.", f"{_cap(degree)} cardiomegaly.", "Enlarged cardiac silhouette."))


_SENTENCE_WRITERS = {
    "Lung Opacity": _opacity_sentences,
    "Consolidation": _opacity_sentences,
    "Pneumothorax": _pneumothorax_sentences,
    "Pleural Effusion": _effusion_sentences,
    "Cardiomegaly": _cardiomegaly_sentences,
}


def _abnormal_findings_text(
    findings: Sequence[ReportFinding], positive: Sequence[str], rng: np.random.Generator
) -> str:
    names = {f.name for f in findings}
    has_opacity = bool(names & {"Lung Opacity", "Consolidation"})
    has_ptx, has_eff = "Pneumothorax" in names, "Pleural Effusion" in names
    opacity_text = [p for f, p in zip(findings, positive, strict=True) if f.name in ("Lung Opacity", "Consolidation")]
    pleural_text = [
        p for f, p in zip(findings, positive, strict=True) if f.name in ("Pneumothorax", "Pleural Effusion")
    ]
    cardiac_text = [p for f, p in zip(findings, positive, strict=True) if f.name == "Cardiomegaly"]

    sentences: list[str] = list(opacity_text)
    if not has_opacity:
        sentences.append(
            _pick(
                rng,
                (
                    "No focal consolidation.",
                    "There is no focal consolidation.",
                    "No focal airspace consolidation is seen.",
                ),
            )
        )
    sentences += pleural_text
    if not has_ptx and not has_eff:
        sentences.append(
            _pick(
                rng,
                (
                    "No pleural effusion or pneumothorax.",
                    "There is no pleural effusion or pneumothorax.",
                    "No effusion or pneumothorax is seen.",
                ),
            )
        )
    elif not has_ptx:
        sentences.append(_pick(rng, ("No pneumothorax.", "There is no pneumothorax.", "No pneumothorax is seen.")))
    elif not has_eff:
        sentences.append(_pick(rng, ("No pleural effusion.", "There is no pleural effusion.", "No effusion.")))
    sentences += cardiac_text
    if not cardiac_text:
        sentences.append(
            _pick(
                rng,
                (
                    "Heart size is normal.",
                    "The heart size is normal.",
                    "The cardiomediastinal silhouette is within normal limits.",
                    "Normal cardiomediastinal silhouette.",
                    "No cardiomegaly.",
                ),
            )
        )
    if rng.random() < 0.3:
        sentences.append("No acute osseous abnormality.")
    return " ".join(sentences)


def _wrap(text: str, first: str = " ") -> str:
    """Wrap at 78 characters with MIMIC-CXR's one-space indent, never splitting a word."""
    return textwrap.fill(
        text, width=78, initial_indent=first, subsequent_indent=" ", break_on_hyphens=False, break_long_words=False
    )


def compose_report(
    findings: Sequence[ReportFinding],
    view: str,
    sex: str,
    rng: np.random.Generator,
    notify_name: str | None = None,
) -> str:
    """Write a MIMIC-CXR-style report describing ``findings``.

    The draws from ``rng`` do not depend on ``notify_name``, so planting a name changes only the
    notification sentence.

    Args:
        findings: the drawn findings; empty for a normal study.
        view: ``"PA"`` or ``"AP"``.
        sex: ``"M"`` or ``"F"``.
        rng: the study's report random generator.
        notify_name: a clinician's name to write into the notification sentence (``--plant-phi``); with
            ``None`` the sentence names nobody.

    Returns:
        The report text, lines wrapped at 78 characters, ending with a newline.
    """
    exam = "CHEST (PA AND LAT)" if view == "PA" else "CHEST (PORTABLE AP)"
    person = "man" if sex == "M" else "woman"
    question = _pick(rng, _INDICATION_QUESTIONS)
    indication = f"___-year-old {person} with {_pick(rng, _INDICATION_COMPLAINTS)}."
    if question:
        indication = f"{indication} {question}"
    comparison = _pick(rng, _COMPARISONS)

    if findings:
        pairs = [_SENTENCE_WRITERS[f.name](f, rng) for f in findings]
        findings_text = _abnormal_findings_text(findings, [p for p, _ in pairs], rng)
        impressions = [i for _, i in pairs]
        if not any(f.name == "Pneumothorax" for f in findings) and rng.random() < 0.4:
            impressions.append("No pneumothorax.")
        if len(impressions) > 1 and rng.random() < 0.5:
            impression_text = " ".join(f"{k}. {s}" for k, s in enumerate(impressions, start=1))
        else:
            impression_text = " ".join(impressions)
        notify = any(f.name == "Pneumothorax" for f in findings) or rng.random() < 0.5
    else:
        findings_text = _pick_weighted(rng, _NORMAL_FINDINGS)
        impression_text = _pick_weighted(rng, _NORMAL_IMPRESSIONS)
        notify = False

    lead_in = rng.random() < 0.3
    lead_sentence = _pick(
        rng,
        ("PA and lateral views of the chest provided.", "PA and lateral chest radiographs were obtained.")
        if view == "PA"
        else ("Portable AP upright view of the chest.", "Single portable AP view of the chest was obtained."),
    )
    if lead_in:
        findings_text = f"{lead_sentence} {findings_text}"
    has_findings_section = rng.random() >= 0.1
    notify_template = int(rng.integers(2))
    if notify:
        if notify_name is None:
            sentence = (
                "Findings were discussed with the referring clinician by telephone.",
                "Dr. ___ was paged at ___ with these results.",
            )[notify_template]
        else:
            sentence = (
                f"Dr. {notify_name} was notified of these results by telephone.",
                f"These results were discussed with Dr. {notify_name} at the time of interpretation.",
            )[notify_template]
        impression_text = f"{impression_text} {sentence}"

    lines = [
        "                                 FINAL REPORT",
        f" EXAMINATION:  {exam}",
        " ",
        _wrap(indication, first=" INDICATION:  "),
        " ",
        f" COMPARISON:  {comparison}",
        " ",
    ]
    if has_findings_section:
        lines += [" FINDINGS:", " ", _wrap(findings_text), " "]
    lines += [" IMPRESSION:", " ", _wrap(impression_text)]
    return "\n".join(lines) + "\n"
