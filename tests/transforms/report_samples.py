"""Report samples shared by the report tests: a MIMIC-CXR report and the real IU X-ray report XMLs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"
IU_REPORTS = REALDATA / "iu_xray" / "reports"

MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough and fever.

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 Findings :

 Heart size: normal. Lungs are clear.
 No pleural effusion.

 impression: No acute cardiopulmonary process.
"""


def _iu_sections_by_regex(xml_text: str) -> dict[str, str]:
    """Section texts read from the raw XML with a regex, independently of the parser under test."""
    sections = {}
    for label, body in re.findall(r'<AbstractText Label="([A-Z]+)"(?:/>|>(.*?)</AbstractText>)', xml_text, re.S):
        sections[label.lower()] = body.strip()
    return sections


def _require_iu_reports() -> list[Path]:
    if not IU_REPORTS.is_dir():
        pytest.skip(f"../shared/realdata not present: IU report XMLs expected in {IU_REPORTS}")
    return sorted(IU_REPORTS.glob("*.xml"))
