"""MONAI transforms for chest radiographs and their reports (installed as ``sista_monai.transforms``).

* :mod:`.io`: :class:`LoadChestXray` / :class:`LoadChestXrayd` and :class:`ChestXrayReader` (DICOM, PNG,
  JPEG → ``(1, W, H)`` float32 in ``[0, 1]``, higher = brighter);
* :mod:`.preprocess`: resize/pad/crop/normalise chains from stock MONAI transforms;
* :mod:`.report`: report sections (MIMIC-CXR text, IU X-ray XML), cleaning and tokenisation;
* :mod:`.exceptions`: :class:`ChestXrayReadError`, :class:`ReportError`.
"""

from __future__ import annotations

from .exceptions import ChestXrayReadError, ReportError, SistaDataError
from .io import (
    ChestXray,
    ChestXrayReader,
    LoadChestXray,
    LoadChestXrayd,
    LoadChestXrayD,
    LoadChestXrayDict,
    apply_window,
    dicom_to_display,
    read_chest_xray,
)
from .preprocess import chest_xray_transforms, deterministic_transforms, random_transforms
from .report import (
    DEFAULT_SECTION_ORDER,
    MIMIC_SECTION_NAMES,
    CleanReport,
    CleanReportd,
    CleanReportD,
    CleanReportDict,
    ExtractReportSections,
    ExtractReportSectionsd,
    ExtractReportSectionsD,
    ExtractReportSectionsDict,
    IUReport,
    ReportTokenizer,
    TokenizeReport,
    TokenizeReportd,
    TokenizeReportD,
    TokenizeReportDict,
    clean_report_text,
    compose_report_text,
    decode_report_bytes,
    filter_report_items,
    parse_iu_report_xml,
    parse_mimic_report,
    report_item_id,
    word_positions,
)
from .grounding import (
    LESION_CLASSES,
    LESION_FINDINGS,
    LESION_WORDS,
    ZONE_WORDS,
    FindingZoneMaskd,
    LesionMaskd,
    LesionWordd,
    ZoneWordMaskd,
    first_piece_words,
)
