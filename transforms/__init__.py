"""MONAI transforms for chest radiographs and their reports (installed as ``sista_monai.transforms``).

* :mod:`.io`: :class:`LoadChestXray` / :class:`LoadChestXrayd` and :class:`ChestXrayReader` (DICOM, PNG,
  JPEG → ``(1, W, H)`` float32 in ``[0, 1]``, higher = brighter);
* :mod:`.display`: the DICOM grayscale pipeline (modality LUT, VOI window, polarity) the readers apply;
* :mod:`.preprocess`: resize/pad/crop/normalise chains from stock MONAI transforms;
* :mod:`.boxes`: boxes carried through resize/pad/crop by the image's affine, and back;
* :mod:`.ensure`: :class:`EnsureChestXrayd`, MONAI Deploy's ``(W, H, 1)`` array → the network's image;
* :mod:`.deploy`: the last postprocessing steps, outputs in the form MONAI Deploy App SDK 4.x reads;
* :mod:`.report`: the report transforms (section extraction, cleaning, tokenisation) and the datalist filter;
* :mod:`.sections`: the report parsers (MIMIC-CXR text, IU X-ray XML) and the training text they compose;
* :mod:`.cleaning`: the report text cleaning (markup, de-identification masks, list markers);
* :mod:`.tokenizer`: the tokenizer loader, fixed-length tokenisation and the word layout of the tokens;
* :mod:`.findings`: the finding labeler of the report text and its transforms (its rules in :mod:`.finding_rules`);
* :mod:`.grounding`: grounding masks, sentence numbers and the finding words a report states;
* errors (:class:`ChestXrayReadError`, :class:`ReportError`) are defined in :mod:`sista_monai.errors`.
"""

from __future__ import annotations

from sista_monai.errors import ChestXrayReadError, ReportError, SistaDataError

from .boxes import BoxesToImagePixelsd, BoxesToOriginalPixelsd, map_boxes
from .cleaning import clean_report_text
from .deploy import DETECTION_COLUMNS, PackDetectionsd, SingleFrameVolumed
from .display import apply_window, dicom_to_display
from .ensure import EnsureChestXray, EnsureChestXrayD, EnsureChestXrayd, EnsureChestXrayDict
from .findings import FINDINGS, ReportFindings, ReportFindingsd, label_report, mesh_findings
from .grounding import (
    LESION_CLASSES,
    LESION_FINDINGS,
    LESION_WORDS,
    NEGATION_CUES,
    SIDE_CODES,
    ZONE_WORDS,
    FindingMentionD,
    FindingMentiond,
    FindingMentionDict,
    FindingZoneMaskd,
    LesionMaskd,
    LesionWordd,
    SentenceIndexD,
    SentenceIndexd,
    SentenceIndexDict,
    ZoneWordMaskd,
    first_piece_words,
    sentence_index,
)
from .io import (
    ChestXray,
    ChestXrayReader,
    LoadChestXray,
    LoadChestXrayD,
    LoadChestXrayd,
    LoadChestXrayDict,
    read_chest_xray,
)
from .preprocess import chest_xray_transforms, crop_transforms, deterministic_transforms, resize_pad_normalize
from .report import (
    CleanReport,
    CleanReportD,
    CleanReportd,
    CleanReportDict,
    ExtractReportSections,
    ExtractReportSectionsD,
    ExtractReportSectionsd,
    ExtractReportSectionsDict,
    TokenizeReport,
    TokenizeReportD,
    TokenizeReportd,
    TokenizeReportDict,
    filter_report_items,
    report_item_id,
)
from .sections import (
    DEFAULT_SECTION_ORDER,
    MIMIC_SECTION_NAMES,
    IUReport,
    compose_report_text,
    decode_report_bytes,
    parse_iu_report_xml,
    parse_mimic_report,
)
from .tokenizer import ReportTokenizer, load_tokenizer, word_positions

__all__ = [
    "FINDINGS",
    "ReportFindings",
    "ReportFindingsd",
    "label_report",
    "mesh_findings",
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
    "FindingMentiond",
    "FindingMentionD",
    "FindingMentionDict",
    "SentenceIndexd",
    "SentenceIndexD",
    "SentenceIndexDict",
    "NEGATION_CUES",
    "SIDE_CODES",
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
    "crop_transforms",
    "clean_report_text",
    "compose_report_text",
    "decode_report_bytes",
    "deterministic_transforms",
    "dicom_to_display",
    "filter_report_items",
    "load_tokenizer",
    "first_piece_words",
    "sentence_index",
    "parse_iu_report_xml",
    "parse_mimic_report",
    "resize_pad_normalize",
    "read_chest_xray",
    "report_item_id",
    "word_positions",
]
