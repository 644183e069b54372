"""A negation- and uncertainty-aware finding labeler for chest X-ray reports, and its MONAI transforms.

SIA's ``findings`` report similarity (METHOD.md §1) compares per-report finding vectors read from the report text:
two reports that state the same findings are one semantic class, whatever their wording. The labeler follows the
design of the rule labelers the field uses to label MIMIC-CXR and CheXpert (NegBio, the CheXpert labeler) and of
medspacy's ConText: sentences, then *target* phrases per finding, then a *context* pass that marks each mention
negated or uncertain from cue phrases in its clause, then an aggregation over the report (positive over uncertain
over negated, as CheXpert aggregates). The rules themselves (target phrases, cue phrases) are in
:mod:`.finding_rules`.

Why its own rules rather than medspacy's ConText. Both were measured against the indexers' MeSH terms on the
development part of the IU X-ray reports (1,622 indexed reports of the training and validation parts; the test part
was never used for this): with the same targets, exclusions and hierarchy, medspacy 1.3.1's default pipeline (PyRuSH
sentences, the default ConText rules) gives a mean F1 of 0.901 over the 20 findings with ≥ 20 positive reports
(0.904 with uncertain mentions left out), these rules 0.904 at the time (0.907 after the last changes below). The
two disagree on 48 report–finding pairs, these rules right in 30: ConText's defaults read "no change in the
effusion" and a "no" carried past "with" or past a missing full stop as negations, and do not negate "resolution
of", "removal of" or "has been removed"; medspacy was right on "no residual pneumothorax" and on "if … fracture",
which these rules now follow. The rules differ from ConText's defaults accordingly: a negation cue's scope ends at a
clause boundary (``but``, ``with``, ``which``, ``;``), change phrases are pseudo-negations, an absence stated after the
finding ("pneumothorax is not seen", "effusion has resolved") negates it, and hypothetical mentions ("if",
"evaluate for", "history of") are not stated. At equal accuracy, medspacy would add spaCy to every install of the
pretraining bundle and take 16 ms a report against 0.6 ms here.

Vocabulary (:data:`FINDINGS`): MIMIC-CXR's 14 CheXpert observations (``No Finding`` is the all-zero vector), plus
the findings the IU X-ray reports name most often (granuloma, calcification, hyperinflation, low lung volumes,
degenerative spine, spine curvature, tortuous aorta, atherosclerosis, scarring, hiatal hernia, elevated
hemidiaphragm, interstitial markings). The demo's findings (opacity, consolidation, pneumothorax, effusion,
cardiomegaly) are among the CheXpert ones. :func:`mesh_findings` maps IU X-ray MeSH major terms onto the same
vocabulary (documented in :data:`MESH_MAP`): the human truth the labeler is measured against.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from .finding_rules import (
    _ALTERNATIVE_RE,
    _EXCLUDE,
    _EXCLUDE_SENTENCE,
    _HYPOTHETICAL_RE,
    _NEGATION_POST_RE,
    _NEGATION_PRE_RE,
    _PSEUDO_RE,
    _SENTENCE_END,
    _TARGET_RES,
    _TERMINATORS,
    _UNCERTAIN_POST_RE,
    _UNCERTAIN_PRE_RE,
)

__all__ = [
    "FINDINGS",
    "CHEXPERT_FINDINGS",
    "MESH_MAP",
    "POSITIVE",
    "NEGATED",
    "UNCERTAIN",
    "Mention",
    "LabeledReport",
    "label_report",
    "negated_spans",
    "HIERARCHY",
    "findings_vector",
    "mesh_findings",
    "split_sentences",
    "ReportFindings",
    "ReportFindingsd",
]

POSITIVE, UNCERTAIN, NEGATED = "positive", "uncertain", "negated"

CHEXPERT_FINDINGS = (
    "enlarged_cardiomediastinum",
    "cardiomegaly",
    "lung_opacity",
    "lung_lesion",
    "edema",
    "consolidation",
    "pneumonia",
    "atelectasis",
    "pneumothorax",
    "pleural_effusion",
    "pleural_other",
    "fracture",
    "support_devices",
)
"""The CheXpert observations other than ``No Finding`` (a report with none of :data:`FINDINGS`)."""

IU_FINDINGS = (
    "granuloma",
    "calcification",
    "hyperinflation",
    "low_lung_volumes",
    "degenerative_spine",
    "spine_curvature",
    "tortuous_aorta",
    "atherosclerosis",
    "scarring",
    "hiatal_hernia",
    "elevated_hemidiaphragm",
    "interstitial_markings",
)
"""Findings that IU X-ray reports and their MeSH terms name often and CheXpert does not have."""

FINDINGS: tuple[str, ...] = CHEXPERT_FINDINGS + IU_FINDINGS
"""The labeler's vocabulary, in the order of :func:`findings_vector`."""


@dataclass(frozen=True)
class Mention:
    """One finding mention: its finding, status, sentence number and character span in that sentence."""

    finding: str
    status: str
    sentence: int
    start: int
    end: int


@dataclass
class LabeledReport:
    """What the labeler read in one report.

    Attributes:
        states: ``{finding: status}`` for every mentioned finding; the status aggregates its mentions (positive
            over uncertain over negated).
        mentions: every mention, in reading order.
        sentences: the report's sentences (lower case), as the mentions' spans index them.
    """

    states: dict[str, str] = field(default_factory=dict)
    mentions: list[Mention] = field(default_factory=list)
    sentences: list[str] = field(default_factory=list)

    def positive(self, uncertain: bool = True) -> set[str]:
        """The findings stated (``uncertain``: with those mentioned as uncertain)."""
        kept = {POSITIVE, UNCERTAIN} if uncertain else {POSITIVE}
        return {finding for finding, status in self.states.items() if status in kept}


def split_sentences(text: str) -> list[str]:
    """Lower-case sentences of ``text``: split at ``.``, ``!``, ``?`` (not inside numbers), ``;`` and newlines."""
    return [s.strip() for s in _SENTENCE_END.split(text.lower()) if s and s.strip()]


def _clause_bounds(sentence: str, start: int, end: int) -> tuple[int, int]:
    """The span of the clause around ``[start, end)``: from the last terminator before it to the next after it."""
    left, right = 0, len(sentence)
    for match in _TERMINATORS.finditer(sentence):
        if match.end() <= start:
            left = match.end()
        elif match.start() >= end:
            right = match.start()
            break
    return left, right


def _status(sentence: str, start: int, end: int) -> str:
    """Negated, uncertain or positive: the context of the mention ``sentence[start:end]`` within its clause."""
    left, right = _clause_bounds(sentence, start, end)
    before, after = sentence[left:start], sentence[end:right]
    pseudo = [m.span() for m in _PSEUDO_RE.finditer(before)]

    def cued(pattern: re.Pattern[str], text: str, spans: Sequence[tuple[int, int]] = ()) -> bool:
        return any(not any(s <= m.start() < e for s, e in spans) for m in pattern.finditer(text))

    uncertain = [m.span() for m in _UNCERTAIN_PRE_RE.finditer(before)]
    negations = [
        m.start()
        for m in _NEGATION_PRE_RE.finditer(before)
        if not any(s <= m.start() < e for s, e in pseudo + uncertain)
    ]
    if negations:
        # "no opacity to suggest pneumonia", "suggestive of chronic disease, without consolidation": a negation in
        # the clause governs the mention whichever side of an uncertainty cue it stands
        return NEGATED
    if _HYPOTHETICAL_RE.search(sentence[:right]):
        return NEGATED  # "if there is concern for fracture", "history of mass": not stated of this study
    if uncertain or cued(_UNCERTAIN_POST_RE, after):
        return UNCERTAIN
    if cued(_NEGATION_POST_RE, after):
        return NEGATED
    if _ALTERNATIVE_RE.search(sentence[left:right]):
        return UNCERTAIN  # "atelectasis or scarring": one of the alternatives, neither stated
    return POSITIVE


_RANK = {NEGATED: 0, UNCERTAIN: 1, POSITIVE: 2}

HIERARCHY = {"consolidation": "lung_opacity", "pneumonia": "lung_opacity"}
"""A stated child finding states its parent too (CheXpert's hierarchy, as the demo's labels and :data:`MESH_MAP`
have it): a consolidation is a lung opacity."""


def label_report(text: str) -> LabeledReport:
    """Read the findings a report states, negates or leaves uncertain.

    Args:
        text: the report text (its findings and impression sections: an indication such as "evaluate for
            pneumothorax" would read as a mention).

    Returns:
        The :class:`LabeledReport`.
    """
    result = LabeledReport(sentences=split_sentences(text))
    for number, sentence in enumerate(result.sentences):
        for finding in FINDINGS:
            for match in _TARGET_RES[finding].finditer(sentence):
                start, end = match.span()
                if start == end or not _whole_words(sentence, start, end):
                    continue
                if finding in _EXCLUDE and _EXCLUDE[finding].search(match.group()):
                    continue
                if finding in _EXCLUDE_SENTENCE and _EXCLUDE_SENTENCE[finding].search(sentence):
                    continue
                status = _status(sentence, start, end)
                result.mentions.append(Mention(finding, status, number, start, end))
                if _RANK[status] > _RANK.get(result.states.get(finding, ""), -1):
                    result.states[finding] = status
    result.mentions.sort(key=lambda m: (m.sentence, m.start))
    for child, parent in HIERARCHY.items():
        if child in result.states and _RANK[result.states[child]] > _RANK.get(result.states.get(parent, ""), -1):
            result.states[parent] = result.states[child]
    return result


def negated_spans(sentence: str) -> list[tuple[int, int]]:
    """Character spans of a lower-case sentence that a negation cue governs: from each cue (pseudo-negations
    left out) to the end of its clause. Used to mark negated words for the negation-aware TF-IDF baseline."""
    pseudo = [m.span() for m in _PSEUDO_RE.finditer(sentence)]
    spans = []
    for match in _NEGATION_PRE_RE.finditer(sentence):
        if any(s <= match.start() < e for s, e in pseudo):
            continue
        _, right = _clause_bounds(sentence, match.end(), match.end())
        spans.append((match.start(), right))
    return spans


def _whole_words(sentence: str, start: int, end: int) -> bool:
    before = sentence[start - 1] if start > 0 else " "
    after = sentence[end] if end < len(sentence) else " "
    return not (before.isalnum() or (after.isalnum() and sentence[end - 1].isalnum()))


def findings_vector(report: LabeledReport, uncertain: float = 1.0) -> torch.Tensor:
    """``(len(FINDINGS),)`` float32: 1 for a positive finding, ``uncertain`` for an uncertain one, else 0."""
    values = {POSITIVE: 1.0, UNCERTAIN: float(uncertain)}
    return torch.tensor([values.get(report.states.get(f, ""), 0.0) for f in FINDINGS], dtype=torch.float32)


MESH_MAP: dict[str, tuple[tuple[str, str | None], ...]] = {
    "cardiomegaly": (("cardiomegaly", None), ("cardiac shadow", "enlarged"), ("heart", "enlarged")),
    "enlarged_cardiomediastinum": (("mediastinum", "prominent"), ("mediastinum", "enlarged")),
    "lung_opacity": (
        ("opacity", None),
        ("density", "lung"),
        ("density", "retrocardiac"),
        ("airspace disease", None),
        ("infiltrate", None),
        ("consolidation", None),
        ("pneumonia", None),
    ),
    "lung_lesion": (("nodule", None), ("mass", None), ("lung neoplasms", None), ("lesion", None)),
    "edema": (("pulmonary edema", None), ("pulmonary congestion", None), ("heart failure", None), ("edema", None)),
    "consolidation": (("consolidation", None),),
    "pneumonia": (("pneumonia", None),),
    "atelectasis": (("pulmonary atelectasis", None), ("atelectasis", None)),
    "pneumothorax": (("pneumothorax", None), ("hydropneumothorax", None)),
    "pleural_effusion": (("pleural effusion", None), ("hydropneumothorax", None), ("costophrenic angle", "blunted")),
    "pleural_other": (("thickening", "pleura"), ("pleural thickening", None)),
    "fracture": (("fractures, bone", None), ("fractures", None), ("rib fractures", None)),
    "support_devices": (
        ("catheters, indwelling", None),
        ("surgical instruments", None),
        ("implanted medical device", None),
        ("tube, inserted", None),
        ("medical device", None),
        ("stents", None),
        ("pacemaker, artificial", None),
        ("sutures", None),
        ("electrodes", None),
        ("prostheses and implants", None),
    ),
    "granuloma": (("calcified granuloma", None), ("granuloma", None), ("granulomatous disease", None)),
    "calcification": (
        ("calcinosis", "lung"),
        ("calcinosis", "lymph nodes"),
        ("calcinosis", "mediastinum"),
        ("calcinosis", "hilum"),
    ),
    "hyperinflation": (
        ("lung", "hyperdistention"),
        ("emphysema", None),
        ("pulmonary emphysema", None),
        ("pulmonary disease, chronic obstructive", None),
        ("diaphragm", "flattened"),
        ("lung, hyperlucent", None),
    ),
    "low_lung_volumes": (("lung", "hypoinflation"),),
    "degenerative_spine": (
        ("thoracic vertebrae", "degenerative"),
        ("spine", "degenerative"),
        ("lumbar vertebrae", "degenerative"),
        ("osteophyte", None),
        ("spondylosis", None),
        ("arthritis", None),
    ),
    "spine_curvature": (("scoliosis", None), ("kyphosis", None)),
    "tortuous_aorta": (("aorta", "tortuous"), ("aorta, thoracic", "tortuous")),
    "atherosclerosis": (
        ("atherosclerosis", None),
        ("calcinosis", "aorta"),
        ("calcinosis", "aorta, thoracic"),
        ("calcinosis", "blood vessels"),
        ("calcinosis", "aortic valve"),
    ),
    "scarring": (("cicatrix", None), ("pulmonary fibrosis", None)),
    "hiatal_hernia": (("hernia, hiatal", None),),
    "elevated_hemidiaphragm": (("diaphragm", "elevated"), ("diaphragmatic eventration", None)),
    "interstitial_markings": (("markings", None), ("lung diseases, interstitial", None)),
}
"""IU X-ray MeSH major terms → findings: ``{finding: ((heading, qualifier), ...)}``. A term ``Heading/q1/q2/...``
maps to a finding when its heading (text before the first ``/``, lower case) equals ``heading`` and, when a
qualifier is given, one of its later parts equals it. Terms that map to nothing (``normal``, ``No Indexing``,
``Technical Quality of Image Unsatisfactory``, ``Shoulder``...) add no finding. Consolidation and pneumonia also
give ``lung_opacity``, as CheXpert's hierarchy has it (the labeler's vectors are compared with each other, and
its per-finding scores with this map)."""


def mesh_findings(terms: Iterable[str]) -> set[str]:
    """The findings (:data:`MESH_MAP`) of a report's MeSH major terms."""
    found: set[str] = set()
    for term in terms:
        parts = [p.strip().lower() for p in term.split("/")]
        heading, qualifiers = parts[0], set(parts[1:])
        for finding, rules in MESH_MAP.items():
            if any(heading == h and (q is None or q in qualifiers) for h, q in rules):
                found.add(finding)
    return found


class ReportFindings(Transform):
    """Report text → ``(len(FINDINGS),)`` float32 finding vector (:func:`label_report`, :func:`findings_vector`).

    Args:
        uncertain: the value of a finding mentioned as uncertain (1: counted as stated, 0: as absent).
    """

    def __init__(self, uncertain: float = 1.0) -> None:
        self.uncertain = float(uncertain)

    def __call__(self, text: str) -> torch.Tensor:
        if not isinstance(text, str):
            raise TypeError(f"ReportFindings reads report text, got {type(text).__name__}")
        return findings_vector(label_report(text), self.uncertain)


class ReportFindingsd(MapTransform):
    """Dictionary form of :class:`ReportFindings`: the finding vector of ``keys``' report text into ``output_key``.

    Args:
        keys: the report text key (after section extraction and cleaning).
        output_key: where the vector goes (default ``"report_findings"``, what SIA's ``findings`` source reads).
        uncertain: see :class:`ReportFindings`.
        allow_missing_keys: don't raise when ``keys`` is missing.
    """

    def __init__(
        self,
        keys: KeysCollection = "report",
        output_key: str = "report_findings",
        uncertain: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"ReportFindingsd reads one report key, got {self.keys}")
        self.output_key = output_key
        self.labeler = ReportFindings(uncertain)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            try:
                d[self.output_key] = self.labeler(d[key])
            except TypeError as err:
                item = d.get("id", "?")
                raise TypeError(f"item {item}: {err}") from None
        return d
