"""Tests of the report text cleaning: list markers, de-identification masks, markup, spacing, punctuation."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sista_monai.transforms.cleaning import clean_report_text


@pytest.mark.parametrize(
    ("raw", "removed", "replaced"),
    [
        (
            "1. Concern for free air.  2. Interval increase in\n effusions.\n3. Catheter 4 cm above the carina.",
            "Concern for free air. Interval increase in effusions. Catheter 4 cm above the carina.",
            "Concern for free air. Interval increase in effusions. Catheter 4 cm above the carina.",
        ),
        (
            "No evidence of disease 2. Changes of kyphosis",
            "No evidence of disease 2. Changes of kyphosis",
            "No evidence of disease 2. Changes of kyphosis",
        ),
        (
            "1. Effusion 2. Atelectasis 3) edema",
            "Effusion Atelectasis edema",
            "Effusion Atelectasis edema",
        ),
        (
            "Fractures of ribs 4 and 5. Nodule 3.3 mm, measuring 2.3. Effusion (grade 2) is small.",
            "Fractures of ribs 4 and 5. Nodule 3.3 mm, measuring 2.3. Effusion (grade 2) is small.",
            "Fractures of ribs 4 and 5. Nodule 3.3 mm, measuring 2.3. Effusion (grade 2) is small.",
        ),
        (
            "Rib pain after a XXXX, XXXX XXXX steps. Normal chest x-XXXX.",
            "Rib pain after a, steps. Normal chest x.",
            "Rib pain after a [deid], [deid] steps. Normal chest x-[deid].",
        ),
        (
            "Dr. XXXX- XXXX was called at XXXX.",
            "Dr. was called at.",
            "Dr. [deid] was called at [deid].",
        ),
        (
            "___F with cough. ___-year-old man seen by Dr. ___ ___ at ___ PM.",
            "F with cough. year-old man seen by Dr. at PM.",
            "[deid] F with cough. [deid]-year-old man seen by Dr. [deid] at [deid] PM.",
        ),
        (
            "Nodules concerning for&lt;BR&gt;metastatic disease ( XXXX ) .",
            "Nodules concerning for metastatic disease.",
            "Nodules concerning for metastatic disease ([deid]).",
        ),
        ("  \n\t ", "", ""),
        ("XXXX. ___", "", "[deid]. [deid]"),
        ("XXXL and XXX-ray", "XXXL and ray", "XXXL and [deid]-ray"),
    ],
)
def test_clean_report_text_known_answers(raw, removed, replaced):
    assert clean_report_text(raw) == removed
    assert clean_report_text(raw, deid_replacement="[deid]") == replaced


def test_clean_report_text_options():
    raw = "1. Effusion.<br/>2. XXXX"
    assert clean_report_text(raw, remove_list_markers=False) == "1. Effusion. 2."
    assert clean_report_text(raw, remove_markup=False) == "Effusion.<br/>2."
    with pytest.raises(TypeError):
        clean_report_text(b"bytes")


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="X_x .,;:()-\n12a", max_size=40))
def test_clean_report_text_leaves_no_masks_or_extra_space(raw):
    for replacement in (None, "[deid]"):
        cleaned = clean_report_text(raw, deid_replacement=replacement)
        assert cleaned == cleaned.strip()
        assert "  " not in cleaned and "\n" not in cleaned
        assert "__" not in cleaned
        assert not re.search(r"(?<![A-Za-z0-9])X{3,}(?![A-Za-z0-9])", cleaned)
