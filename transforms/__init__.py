"""MONAI transforms for chest radiographs and their reports (installed as ``sista_monai.transforms``).

* :mod:`.io`: :class:`LoadChestXray` / :class:`LoadChestXrayd` and :class:`ChestXrayReader` (DICOM, PNG,
  JPEG → ``(1, W, H)`` float32 in ``[0, 1]``, higher = brighter);
* :mod:`.preprocess`: resize/pad/crop/normalise chains from stock MONAI transforms;
* :mod:`.boxes`: boxes carried through resize/pad/crop by the image's affine, and back;
* :mod:`.ensure`: :class:`EnsureChestXrayd`, MONAI Deploy's ``(W, H, 1)`` array → the network's image;
* :mod:`.deploy`: the last postprocessing steps, outputs in the form MONAI Deploy App SDK 4.x reads;
* :mod:`.report`: report sections (MIMIC-CXR text, IU X-ray XML), cleaning and tokenisation;
* errors (:class:`ChestXrayReadError`, :class:`ReportError`) are defined in :mod:`sista_monai.errors`.
"""

from __future__ import annotations

from sista_monai.errors import ChestXrayReadError, ReportError, SistaDataError

from .boxes import BoxesToImagePixelsd, BoxesToOriginalPixelsd, map_boxes
from .deploy import DETECTION_COLUMNS, PackDetectionsd, SingleFrameVolumed
from .ensure import EnsureChestXray, EnsureChestXrayD, EnsureChestXrayd, EnsureChestXrayDict
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
from .io import (
    ChestXray,
    ChestXrayReader,
    LoadChestXray,
    LoadChestXrayD,
    LoadChestXrayd,
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
    CleanReportD,
    CleanReportd,
    CleanReportDict,
    ExtractReportSections,
    ExtractReportSectionsD,
    ExtractReportSectionsd,
    ExtractReportSectionsDict,
    IUReport,
    ReportTokenizer,
    TokenizeReport,
    TokenizeReportD,
    TokenizeReportd,
    TokenizeReportDict,
    clean_report_text,
    compose_report_text,
    decode_report_bytes,
    filter_report_items,
    load_tokenizer,
    parse_iu_report_xml,
    parse_mimic_report,
    report_item_id,
    word_positions,
)

__all__ = [
    "DETECTION_COLUMNS",
    "PackDetectionsd",
    "SingleFrameVolumed",
    "BoxesToImagePixelsd",
    "BoxesToOriginalPixelsd",
    "map_boxes",
    "EnsureChestXray",
    "EnsureChestXrayD",
    "EnsureChestXrayd",
    "EnsureChestXrayDict",
    "ChestXray",
    "ChestXrayReadError",
    "ChestXrayReader",
    "CleanReport",
    "CleanReportD",
    "CleanReportDict",
    "CleanReportd",
    "DEFAULT_SECTION_ORDER",
    "ExtractReportSections",
    "ExtractReportSectionsD",
    "ExtractReportSectionsDict",
    "ExtractReportSectionsd",
    "FindingZoneMaskd",
    "IUReport",
    "LESION_CLASSES",
    "LESION_FINDINGS",
    "LESION_WORDS",
    "LesionMaskd",
    "LesionWordd",
    "LoadChestXray",
    "LoadChestXrayD",
    "LoadChestXrayDict",
    "LoadChestXrayd",
    "MIMIC_SECTION_NAMES",
    "ReportError",
    "ReportTokenizer",
    "SistaDataError",
    "TokenizeReport",
    "TokenizeReportD",
    "TokenizeReportDict",
    "TokenizeReportd",
    "ZONE_WORDS",
    "ZoneWordMaskd",
    "apply_window",
    "chest_xray_transforms",
    "clean_report_text",
    "compose_report_text",
    "decode_report_bytes",
    "deterministic_transforms",
    "dicom_to_display",
    "filter_report_items",
    "load_tokenizer",
    "first_piece_words",
    "parse_iu_report_xml",
    "parse_mimic_report",
    "random_transforms",
    "read_chest_xray",
    "report_item_id",
    "word_positions",
]
