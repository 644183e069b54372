"""Radiology report transforms: section extraction, cleaning and tokenisation.

A report travels through three steps before it reaches the text encoder:

1. :class:`ExtractReportSections` turns a raw report (MIMIC-CXR free text, an Indiana University
   report XML, or the bytes of either) into the training text, IMPRESSION followed by FINDINGS by default.
2. :class:`CleanReport` collapses whitespace and removes numbered-list markers and de-identification masks
   (``XXXX``, ``___``), and refuses a report that is empty afterwards.
3. :class:`TokenizeReport` turns the text into fixed-length ``input_ids``, ``attention_mask`` and
   ``word_mask`` tensors with a Hugging Face fast tokenizer.

Each step has an array form (operating on one report) and a dictionary form (operating on datalist items,
naming the item in its errors). Errors are :class:`~sista_monai.errors.ReportError` and their
messages never contain report text. :func:`filter_report_items` is the way to skip unusable reports with a
record of each skip instead of raising during training. The text work of the steps lives in :mod:`.sections`
(the parsers), :mod:`.cleaning` (:func:`~.cleaning.clean_report_text`) and :mod:`.tokenizer`
(:class:`~.tokenizer.ReportTokenizer`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from sista_monai.errors import ReportError

from .cleaning import clean_report_text
from .sections import (
    _PREAMBLE,
    DEFAULT_SECTION_ORDER,
    IUReport,
    compose_report_text,
    decode_report_bytes,
    parse_iu_report_xml,
    parse_mimic_report,
)
from .tokenizer import ReportTokenizer

__all__ = [
    "report_item_id",
    "filter_report_items",
    "ExtractReportSections",
    "CleanReport",
    "TokenizeReport",
    "ExtractReportSectionsd",
    "ExtractReportSectionsD",
    "ExtractReportSectionsDict",
    "CleanReportd",
    "CleanReportD",
    "CleanReportDict",
    "TokenizeReportd",
    "TokenizeReportD",
    "TokenizeReportDict",
]

logger = logging.getLogger(__name__)


def report_item_id(data: Mapping[Hashable, Any], id_key: str | None = "id", image_key: str | None = "image") -> str:
    """The name of a datalist item for error messages and skip records.

    Args:
        data: the datalist item.
        id_key: the key of the item's identifier, used when present.
        image_key: the key of the item's image, used when there is no id: a path, the first path of a
            list, or the ``filename_or_obj`` of a loaded MetaTensor.

    Returns:
        The identifier, the image path, or ``"<item without id>"``.
    """
    if id_key is not None and data.get(id_key) is not None:
        return str(data[id_key])
    image = data.get(image_key) if image_key is not None else None
    if isinstance(image, (list, tuple)) and image:
        image = image[0]
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    meta = getattr(image, "meta", None)
    if isinstance(meta, Mapping) and meta.get("filename_or_obj"):
        return str(meta["filename_or_obj"])
    return "<item without id>"


_PATH_SUFFIXES = (".txt", ".xml")


def _is_report_path(value: str) -> bool:
    return "\n" not in value and len(value) < 4096 and value.lower().endswith(_PATH_SUFFIXES) and os.path.isfile(value)


class ExtractReportSections(Transform):
    """Turn a raw report into its training text: the chosen sections joined in order.

    Accepted inputs: MIMIC-CXR free text (``str``), an IU report XML document (``str`` starting with
    ``<``), the bytes of either, a path (``os.PathLike``, or a ``str`` without newline naming an existing
    ``.txt``/``.xml`` file), an :class:`IUReport`, or a mapping of already parsed sections.

    Args:
        parser: ``"mimic"`` (:func:`parse_mimic_report`), ``"iu"`` (:func:`parse_iu_report_xml`) or
            ``"auto"``: IU for ``.xml`` paths and documents that start with ``<``, MIMIC otherwise.
        order: the sections composed into the training text, in order (IMPRESSION then FINDINGS by
            default); see :func:`compose_report_text`.
        fallback: sections composed instead when none of ``order`` has text; the default
            ``("preamble",)`` keeps a MIMIC report without any recognised header.
        separator: put between consecutive sections.
        encoding: the codec of byte and file inputs.
        errors: how undecodable bytes are handled (``"strict"`` raises, ``"replace"`` substitutes U+FFFD).

    Raises:
        ValueError: when ``parser`` is unknown.
    """

    backend: list[TransformBackends] = []
    parsers = ("auto", "mimic", "iu")

    def __init__(
        self,
        parser: str = "auto",
        order: Sequence[str] = DEFAULT_SECTION_ORDER,
        fallback: Sequence[str] = (_PREAMBLE,),
        separator: str = " ",
        encoding: str = "utf-8",
        errors: str = "strict",
    ) -> None:
        if parser not in self.parsers:
            raise ValueError(f"parser must be one of {self.parsers}, got {parser!r}")
        self.parser = parser
        self.order = tuple(order)
        self.fallback = tuple(fallback)
        self.separator = separator
        self.encoding = encoding
        self.errors = errors

    def sections(self, report: Any, source: object = "report") -> Mapping[str, str]:
        """Parse ``report`` into its sections.

        Args:
            report: any input accepted by this transform.
            source: how errors name the report (item id or path).

        Returns:
            Section texts keyed by lower-case name.

        Raises:
            ReportError: when the report cannot be read, decoded or parsed.
            TypeError: when ``report`` has an unsupported type.
        """
        if isinstance(report, IUReport):
            return report.sections
        if isinstance(report, Mapping):
            return report
        if isinstance(report, str) and _is_report_path(report):
            report = Path(report)
        if isinstance(report, os.PathLike):
            path = Path(report)
            if self.parser == "iu" or (self.parser == "auto" and path.suffix.lower() == ".xml"):
                return parse_iu_report_xml(path).sections
            try:
                report = path.read_bytes()
            except OSError as err:
                raise ReportError(path, f"cannot read report file ({type(err).__name__})") from None
            source = path
        if isinstance(report, (bytes, bytearray)):
            if self.parser == "iu" or (self.parser == "auto" and bytes(report).lstrip().startswith(b"<")):
                return parse_iu_report_xml(bytes(report), source_name=str(source)).sections
            report = decode_report_bytes(report, source, self.encoding, self.errors)
        if not isinstance(report, str):
            raise TypeError(f"{source}: unsupported report type {type(report).__name__}")
        if self.parser == "iu" or (self.parser == "auto" and report.lstrip().startswith("<")):
            return parse_iu_report_xml(report, source_name=str(source)).sections
        return parse_mimic_report(report)

    def __call__(self, report: Any, source: object = "report") -> str:
        """Return the training text of ``report``.

        Args:
            report: any input accepted by this transform.
            source: how errors name the report (item id or path).

        Returns:
            The composed text, ``""`` when neither ``order`` nor ``fallback`` sections have text.
        """
        sections = self.sections(report, source)
        text = compose_report_text(sections, self.order, self.separator)
        if not text and self.fallback:
            text = compose_report_text(sections, self.fallback, self.separator)
        return text


class CleanReport(Transform):
    """Clean a report text with :func:`clean_report_text` and refuse an empty result.

    Args:
        deid_replacement: the token each run of de-identification masks becomes; ``None`` removes them.
        remove_list_markers: remove numbered-list markers.
        remove_markup: decode HTML entities and turn ``<BR>`` tags into spaces.
        allow_empty: return ``""`` for a report that is empty after cleaning instead of raising.
        encoding: the codec used when the report arrives as bytes.

    Raises:
        ReportError: (on call) when the report is empty after cleaning and ``allow_empty`` is false, or
            when bytes cannot be decoded.
    """

    backend: list[TransformBackends] = []

    def __init__(
        self,
        deid_replacement: str | None = None,
        remove_list_markers: bool = True,
        remove_markup: bool = True,
        allow_empty: bool = False,
        encoding: str = "utf-8",
    ) -> None:
        self.deid_replacement = deid_replacement
        self.remove_list_markers = remove_list_markers
        self.remove_markup = remove_markup
        self.allow_empty = allow_empty
        self.encoding = encoding

    def __call__(self, text: str | bytes, source: object = "report") -> str:
        """Return the cleaned ``text``; errors name ``source`` (item id or path)."""
        if isinstance(text, (bytes, bytearray)):
            text = decode_report_bytes(text, source, self.encoding)
        cleaned = clean_report_text(
            text,
            self.deid_replacement,
            remove_list_markers=self.remove_list_markers,
            remove_markup=self.remove_markup,
        )
        if not cleaned and not self.allow_empty:
            raise ReportError(source, "report is empty after cleaning")
        return cleaned


class TokenizeReport(Transform):
    """Tokenise a report text into fixed-length tensors with a :class:`ReportTokenizer`.

    Args:
        tokenizer: a :class:`ReportTokenizer` (used as is; the other arguments are then ignored), a hub
            id, a local folder or a fast tokenizer object.
        max_length: the length of every output, special tokens included.
        exclude_punctuation: leave pure-punctuation tokens out of ``word_mask``.
        local_files_only: load from the local folder or cache only.
        revision: the hub revision to load.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        tokenizer: ReportTokenizer | str | os.PathLike | Any,
        max_length: int = 112,
        exclude_punctuation: bool = True,
        local_files_only: bool = True,
        revision: str | None = None,
    ) -> None:
        if isinstance(tokenizer, ReportTokenizer):
            self.tokenizer = tokenizer
        else:
            self.tokenizer = ReportTokenizer(
                tokenizer,
                max_length=max_length,
                exclude_punctuation=exclude_punctuation,
                local_files_only=local_files_only,
                revision=revision,
            )

    def __call__(self, text: str) -> dict[str, torch.Tensor]:
        """Return ``input_ids``, ``attention_mask``, ``word_mask``, ``word_start`` and ``word_group`` (length ``max_length``)."""
        return self.tokenizer(text)


class ExtractReportSectionsd(MapTransform):
    """Dictionary-based wrapper of :class:`ExtractReportSections`: replaces each key's raw report by its text.

    Args:
        keys: keys of the reports to transform. See also: monai.transforms.MapTransform
        parser: ``"mimic"``, ``"iu"`` or ``"auto"``.
        order: the sections composed into the training text, in order.
        fallback: sections composed instead when none of ``order`` has text.
        separator: put between consecutive sections.
        encoding: the codec of byte and file inputs.
        errors: how undecodable bytes are handled.
        id_key: the key of the item id that errors name; when absent, the ``image_key`` path is used.
        image_key: the key of the item's image.
        allow_missing_keys: don't raise exception if key is missing.
    """

    backend = ExtractReportSections.backend

    def __init__(
        self,
        keys: KeysCollection = "report",
        parser: str = "auto",
        order: Sequence[str] = DEFAULT_SECTION_ORDER,
        fallback: Sequence[str] = (_PREAMBLE,),
        separator: str = " ",
        encoding: str = "utf-8",
        errors: str = "strict",
        id_key: str | None = "id",
        image_key: str | None = "image",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.extractor = ExtractReportSections(parser, order, fallback, separator, encoding, errors)
        self.id_key = id_key
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        source = report_item_id(d, self.id_key, self.image_key)
        for key in self.key_iterator(d):
            d[key] = self.extractor(d[key], source=source)
        return d


class CleanReportd(MapTransform):
    """Dictionary-based wrapper of :class:`CleanReport`; errors name the item.

    Args:
        keys: keys of the reports to clean. See also: monai.transforms.MapTransform
        deid_replacement: the token each run of de-identification masks becomes; ``None`` removes them.
        remove_list_markers: remove numbered-list markers.
        remove_markup: decode HTML entities and turn ``<BR>`` tags into spaces.
        allow_empty: keep a report that is empty after cleaning instead of raising.
        encoding: the codec used when a report arrives as bytes.
        id_key: the key of the item id that errors name; when absent, the ``image_key`` path is used.
        image_key: the key of the item's image.
        allow_missing_keys: don't raise exception if key is missing.

    Raises:
        ReportError: (on call) ``ReportError(item_id, "report is empty after cleaning")``.
    """

    backend = CleanReport.backend

    def __init__(
        self,
        keys: KeysCollection = "report",
        deid_replacement: str | None = None,
        remove_list_markers: bool = True,
        remove_markup: bool = True,
        allow_empty: bool = False,
        encoding: str = "utf-8",
        id_key: str | None = "id",
        image_key: str | None = "image",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.cleaner = CleanReport(deid_replacement, remove_list_markers, remove_markup, allow_empty, encoding)
        self.id_key = id_key
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        source = report_item_id(d, self.id_key, self.image_key)
        for key in self.key_iterator(d):
            d[key] = self.cleaner(d[key], source=source)
        return d


class TokenizeReportd(MapTransform):
    """Dictionary-based wrapper of :class:`TokenizeReport`.

    The report text under each key is kept; the three tensors are written under ``input_ids_key``,
    ``attention_mask_key`` and ``word_mask_key``. Each output key may contain ``{key}``, replaced by the
    report's key (e.g. ``"{key}_input_ids"`` gives ``"report_input_ids"``), which is required when several
    keys are tokenised.

    Args:
        keys: keys of the report texts. See also: monai.transforms.MapTransform
        tokenizer: a :class:`ReportTokenizer`, a hub id, a local folder or a fast tokenizer object.
        max_length: the length of every output, special tokens included.
        exclude_punctuation: leave pure-punctuation tokens out of ``word_mask``.
        local_files_only: load from the local folder or cache only.
        revision: the hub revision to load.
        input_ids_key: where the token ids go (default ``"input_ids"``).
        attention_mask_key: where the attention mask goes (default ``"attention_mask"``).
        word_mask_key: where the word mask goes (default ``"word_mask"``).
        word_start_key: where the first-piece positions of the words go (default ``"word_start"``, or
            ``"{key}_word_start"`` when several keys are tokenised).
        word_group_key: where the repeated-word groups go (default ``"word_group"``, or ``"{key}_word_group"``).
        allow_missing_keys: don't raise exception if key is missing.

    Raises:
        ValueError: when several keys would write the same output keys.
    """

    backend = TokenizeReport.backend

    def __init__(
        self,
        keys: KeysCollection,
        tokenizer: ReportTokenizer | str | os.PathLike | Any,
        max_length: int = 112,
        exclude_punctuation: bool = True,
        local_files_only: bool = True,
        revision: str | None = None,
        input_ids_key: str = "input_ids",
        attention_mask_key: str = "attention_mask",
        word_mask_key: str = "word_mask",
        word_start_key: str | None = None,
        word_group_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        several = len(self.keys) > 1
        word_start_key = word_start_key or ("{key}_word_start" if several else "word_start")
        word_group_key = word_group_key or ("{key}_word_group" if several else "word_group")
        self.output_keys = {
            "input_ids": input_ids_key,
            "attention_mask": attention_mask_key,
            "word_mask": word_mask_key,
            "word_start": word_start_key,
            "word_group": word_group_key,
        }
        if len(self.keys) > 1 and not all("{key}" in name for name in self.output_keys.values()):
            raise ValueError(
                f"tokenising {len(self.keys)} keys needs output keys containing '{{key}}', got {self.output_keys}"
            )
        self.tokenize = TokenizeReport(tokenizer, max_length, exclude_punctuation, local_files_only, revision)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            for name, value in self.tokenize(d[key]).items():
                d[self.output_keys[name].format(key=key)] = value
        return d


def filter_report_items(
    items: Iterable[Mapping[Hashable, Any]],
    key: str = "report",
    *,
    id_key: str | None = "id",
    image_key: str | None = "image",
    parser: str | None = None,
    order: Sequence[str] = DEFAULT_SECTION_ORDER,
    fallback: Sequence[str] = (_PREAMBLE,),
    **clean_kwargs: Any,
) -> tuple[list[Mapping[Hashable, Any]], list[dict[str, str]]]:
    """Split datalist items into those with a usable report and a record of those skipped.

    This is the documented way to skip unusable reports instead of having :class:`CleanReportd` raise in
    the middle of training: run it when building the datalist and keep (or log) the skip records. An item
    is skipped when it has no ``key``, when its report cannot be decoded or parsed, or when it is empty
    after (optional section extraction and) cleaning.

    Args:
        items: datalist items.
        key: the key of the report.
        id_key: the key of the item id the skip records name; when absent, the ``image_key`` path is used.
        image_key: the key of the item's image.
        parser: when given (``"mimic"``, ``"iu"`` or ``"auto"``), extract sections with
            :class:`ExtractReportSections` before cleaning, as the pipeline will.
        order: the sections composed into the training text when ``parser`` is given.
        fallback: the fallback sections when ``parser`` is given.
        **clean_kwargs: keyword arguments of :func:`clean_report_text` (e.g. ``deid_replacement``).

    Returns:
        ``(kept, skipped)``: the kept items themselves (unchanged, in order) and one
        ``{"item": <id>, "reason": <PHI-free reason>}`` per skipped item.
    """
    extractor = ExtractReportSections(parser, order, fallback) if parser is not None else None
    kept: list[Mapping[Hashable, Any]] = []
    skipped: list[dict[str, str]] = []
    for item in items:
        item_id = report_item_id(item, id_key, image_key)
        reason: str | None = None
        if key not in item or item[key] is None:
            reason = f"no {key!r} in the item"
        else:
            try:
                text = extractor(item[key], source=item_id) if extractor is not None else item[key]
                if isinstance(text, (bytes, bytearray)):
                    text = decode_report_bytes(text, item_id)
                if not clean_report_text(text, **clean_kwargs):
                    reason = "report is empty after cleaning"
            except ReportError as err:
                reason = err.reason
            except TypeError:
                reason = f"report is {type(item[key]).__name__}, not text"
        if reason is None:
            kept.append(item)
        else:
            skipped.append({"item": item_id, "reason": reason})
            logger.debug("skipping item %s: %s", item_id, reason)
    logger.info("report filter kept %d items and skipped %d", len(kept), len(skipped))
    return kept, skipped


ExtractReportSectionsD = ExtractReportSectionsDict = ExtractReportSectionsd
CleanReportD = CleanReportDict = CleanReportd
TokenizeReportD = TokenizeReportDict = TokenizeReportd
