"""The finding labeler: hand-read sentences, the MeSH map, the vector and the transforms, and real IU X-ray reports."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sista_monai.transforms import ReportFindings, ReportFindingsd
from sista_monai.transforms.findings import (
    FINDINGS,
    NEGATED,
    POSITIVE,
    UNCERTAIN,
    findings_vector,
    label_report,
    mesh_findings,
    negated_spans,
    split_sentences,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # plain statements and list negation
        ("Small right pleural effusion.", {"pleural_effusion": POSITIVE}),
        (
            "No focal consolidation, pleural effusion, or pneumothorax.",
            {"consolidation": NEGATED, "lung_opacity": NEGATED, "pleural_effusion": NEGATED, "pneumothorax": NEGATED},
        ),
        (
            "The lungs are clear without effusion or pneumothorax.",
            {"pleural_effusion": NEGATED, "pneumothorax": NEGATED},
        ),
        # a clause boundary ends the negation's scope
        (
            "No cardiomegaly with bilateral small pleural effusions.",
            {"cardiomegaly": NEGATED, "pleural_effusion": POSITIVE},
        ),
        (
            "No pneumothorax, but there is a small left effusion.",
            {"pneumothorax": NEGATED, "pleural_effusion": POSITIVE},
        ),
        # absence stated after the finding
        ("Pneumothorax is not seen.", {"pneumothorax": NEGATED}),
        ("The effusion has resolved.", {"pleural_effusion": NEGATED}),
        # pseudo-negation: a change phrase is not a negation of the finding
        ("No change in the small left pleural effusion.", {"pleural_effusion": POSITIVE}),
        # uncertainty, before and after
        ("Possible small right apical pneumothorax.", {"pneumothorax": UNCERTAIN}),
        ("Pneumonia cannot be excluded.", {"pneumonia": UNCERTAIN, "lung_opacity": UNCERTAIN}),
        # a negation governs what its clause goes on to suggest
        ("There is no focal airspace opacity to suggest pneumonia.", {"lung_opacity": NEGATED, "pneumonia": NEGATED}),
        # alternatives: neither is stated
        ("Minimal basilar atelectasis or scarring.", {"atelectasis": UNCERTAIN, "scarring": UNCERTAIN}),
        # the hierarchy: a consolidation is a lung opacity
        ("Focal consolidation in the right lower lobe.", {"consolidation": POSITIVE, "lung_opacity": POSITIVE}),
        # IU findings, and words that must not trigger them
        ("Calcified granuloma in the left upper lobe.", {"granuloma": POSITIVE}),
        ("Subcutaneous emphysema of the neck.", {}),
        ("Degenerative changes of both shoulders.", {}),
        ("Degenerative changes of the thoracic spine.", {"degenerative_spine": POSITIVE}),
        ("Low lung volumes. Tortuous aorta.", {"low_lung_volumes": POSITIVE, "tortuous_aorta": POSITIVE}),
        ("Heart size is normal.", {}),
    ],
)
def test_label_report_hand_read(text: str, expected: dict[str, str]) -> None:
    assert label_report(text).states == expected


def test_positive_set_and_vector() -> None:
    report = label_report("Possible small left effusion. Moderate cardiomegaly. No pneumothorax.")
    assert report.positive() == {"pleural_effusion", "cardiomegaly"}
    assert report.positive(uncertain=False) == {"cardiomegaly"}
    vector = findings_vector(report, uncertain=0.5)
    assert vector.shape == (len(FINDINGS),) and vector.dtype == torch.float32
    assert vector[FINDINGS.index("cardiomegaly")] == 1.0
    assert vector[FINDINGS.index("pleural_effusion")] == 0.5
    assert vector[FINDINGS.index("pneumothorax")] == 0.0
    assert float(vector.sum()) == 1.5


def test_mentions_index_their_sentences() -> None:
    report = label_report("Normal heart. Small right effusion; no pneumothorax.")
    assert report.sentences == ["normal heart", "small right effusion", "no pneumothorax"]
    spans = [(m.finding, report.sentences[m.sentence][m.start : m.end], m.status) for m in report.mentions]
    assert spans == [("pleural_effusion", "effusion", POSITIVE), ("pneumothorax", "pneumothorax", NEGATED)]


def test_split_sentences_keeps_decimals() -> None:
    assert split_sentences("A 1.5 cm nodule. No effusion!") == ["a 1.5 cm nodule", "no effusion"]


def test_negated_spans_stop_at_the_clause_end() -> None:
    sentence = "no pneumothorax but a small effusion"
    ((start, end),) = negated_spans(sentence)
    assert sentence[start:end].strip() == "no pneumothorax"
    assert negated_spans("no change in the effusion") == []


def test_mesh_map() -> None:
    assert mesh_findings(["normal"]) == set()
    assert mesh_findings(["Cardiomegaly/mild", "Pleural Effusion/bilateral/small"]) == {
        "cardiomegaly",
        "pleural_effusion",
    }
    # a qualifier decides for generic headings
    assert mesh_findings(["Lung/hypoinflation"]) == {"low_lung_volumes"}
    assert mesh_findings(["Lung/hyperdistention/mild"]) == {"hyperinflation"}
    assert mesh_findings(["Calcinosis/aorta"]) == {"atherosclerosis"}
    assert mesh_findings(["Calcinosis/lung/hilum/lymph nodes"]) == {"calcification"}
    assert mesh_findings(["Consolidation/lung/base/left"]) == {"consolidation", "lung_opacity"}
    assert mesh_findings(["Technical Quality of Image Unsatisfactory", "Shoulder/degenerative"]) == set()


def test_transforms() -> None:
    text = "Small right pleural effusion. No pneumothorax."
    expected = torch.zeros(len(FINDINGS))
    expected[FINDINGS.index("pleural_effusion")] = 1.0
    assert torch.equal(ReportFindings()(text), expected)
    out = ReportFindingsd(keys="report")({"report": text, "id": "a"})
    assert torch.equal(out["report_findings"], expected) and out["report"] == text
    with pytest.raises(TypeError, match="item b"):
        ReportFindingsd(keys="report")({"report": None, "id": "b"})


def test_labeler_on_real_iu_reports_development_part(realdata: Path) -> None:
    """Per-finding F1 against the indexers' MeSH terms on the part the rules were developed on (the experiment
    reports the untouched test part): a regression guard, at the level measured when the rules were written."""
    from sista_monai.experiments.report_similarity import labeler_scores, load_reports

    development = load_reports(realdata / "iu_xray" / "reports").select(("training", "validation"))
    scores = labeler_scores(development)
    assert len(development.ids) > 1500
    assert scores["mean_f1"] >= 0.88
    assert scores["per_finding"]["cardiomegaly"]["f1"] >= 0.9
    assert scores["per_finding"]["pleural_effusion"]["f1"] >= 0.85
