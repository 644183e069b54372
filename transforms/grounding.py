"""Ground-truth transforms for measuring patch–word grounding (the STA pointing games).

* :class:`FindingZoneMaskd` draws the lung zones of an item's findings (``[x, y, width, height]`` DICOM
  pixel boxes, as the demo datalist gives them) into a ``(1, W, H)`` mask in the loaded image's geometry, so
  the same MONAI spatial transforms that resize, pad and crop the image carry the zone along.
* :class:`LesionMaskd` draws each finding's *own* box into one channel per lesion class
  (:data:`LESION_CLASSES`), the truth of the lesion pointing game.
* :class:`ZoneWordMaskd` marks the words of a tokenised report that name a zone (``right``, ``lower``,
  ``apical``...) and :class:`LesionWordd` the words that name a lesion (``opacity``, ``pneumothorax``...), at
  the first piece of each word (whole words, also when the tokenizer splits them).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from .report import load_tokenizer

__all__ = [
    "LESION_CLASSES",
    "LESION_FINDINGS",
    "LESION_WORDS",
    "ZONE_WORDS",
    "FindingZoneMaskd",
    "LesionMaskd",
    "LesionWordd",
    "ZoneWordMaskd",
    "first_piece_words",
]

ZONE_WORDS = frozenset(
    {
        "right",
        "left",
        "upper",
        "middle",
        "mid",
        "lower",
        "apical",
        "apex",
        "apices",
        "basal",
        "basilar",
        "base",
        "bases",
        "lobe",
        "zone",
        "lingula",
        "lingular",
        "perihilar",
        "retrocardiac",
    }
)
"""Words that locate a finding in the lungs (lower case, whole words)."""

LESION_CLASSES: tuple[str, ...] = ("opacity", "pneumothorax", "effusion")
"""The lesion classes of the lesion pointing game, in channel order of :class:`LesionMaskd`."""

LESION_FINDINGS: dict[str, tuple[str, ...]] = {
    "opacity": ("Lung Opacity", "Consolidation"),
    "pneumothorax": ("Pneumothorax",),
    "effusion": ("Pleural Effusion",),
}
"""The datalist finding names whose boxes make each lesion class's truth."""

LESION_WORDS: dict[str, tuple[str, ...]] = {
    "opacity": ("opacity", "opacities", "consolidation", "pneumonia", "infiltrate"),
    "pneumothorax": ("pneumothorax",),
    "effusion": ("effusion",),
}
"""The report words that name each lesion class (lower case, whole words), from the demo report grammar
(:mod:`sista_monai.data.demo.reports`) and MIMIC-CXR usage. Cardiomegaly words are left out on purpose: the
heart sits in the same place in every frontal radiograph, so an image-free pointer finds it."""


def _like(mask: torch.Tensor, image: Any) -> Any:
    """``mask`` as a MetaTensor with ``image``'s affine and metadata (when ``image`` is one)."""
    if not isinstance(image, MetaTensor):
        return mask
    return MetaTensor(mask, affine=image.affine, meta={k: v for k, v in image.meta.items() if k != "affine"})


def first_piece_words(
    input_ids: torch.Tensor, word_start: torch.Tensor | None, tokens: Sequence[str]
) -> dict[int, str]:
    """The words of a tokenised report, keyed by the position of their first piece.

    Args:
        input_ids: ``(T,)`` token ids.
        word_start: ``(T,)`` first-piece position of every word token, ``-1`` elsewhere
            (:func:`~sista_monai.transforms.report.word_positions`); ``None`` treats every non-special token as a
            word of its own (the single-piece rule of older pipelines).
        tokens: the vocabulary, ``tokens[id]`` the token string (WordPiece continuations start with ``##``).

    Returns:
        ``{first piece position: lower-case word}``, continuation markers removed and pieces joined.
    """
    ids = torch.as_tensor(input_ids).tolist()
    if word_start is None:
        return {j: tokens[i].lower() for j, i in enumerate(ids) if 0 <= i < len(tokens)}
    starts = torch.as_tensor(word_start).tolist()
    words: dict[int, str] = {}
    for position, start in enumerate(starts):
        if start < 0 or not 0 <= ids[position] < len(tokens):
            continue
        piece = tokens[ids[position]]
        piece = piece[2:] if position != start and piece.startswith("##") else piece
        words[start] = words.get(start, "") + piece.lower()
    return words


class _WordTargets(MapTransform):
    """Shared part of the word-marking transforms: the tokenizer's vocabulary and the word reconstruction."""

    def __init__(
        self,
        keys: KeysCollection,
        tokenizer: Any,
        word_start_key: str | None,
        word_mask_key: str | None,
        local_files_only: bool,
        allow_missing_keys: bool,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if tokenizer is None:
            raise ValueError(f"{type(self).__name__} needs the tokenizer that produced the ids")
        tokenizer = load_tokenizer(tokenizer, local_files_only)
        vocab = tokenizer.get_vocab()
        self.tokens = [""] * (max(vocab.values()) + 1)
        for token, index in vocab.items():
            self.tokens[index] = token
        self.word_start_key, self.word_mask_key = word_start_key, word_mask_key

    output_key: str
    background: bool | int
    """The value of every token that is not a marked word (its type sets the output dtype)."""

    def value(self, word: str) -> bool | int:
        """The output at the first piece of ``word``."""
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            ids, words = self.words(d, key)
            dtype = torch.bool if isinstance(self.background, bool) else torch.long
            out = torch.full(ids.shape, self.background, dtype=dtype)
            for position, word in words.items():
                out[position] = self.value(word)
            d[self.output_key] = out
        return d

    def words(self, d: Mapping[Hashable, Any], key: Hashable) -> tuple[torch.Tensor, dict[int, str]]:
        ids = torch.as_tensor(d[key])
        start = d.get(self.word_start_key) if self.word_start_key else None
        words = first_piece_words(ids, start, self.tokens)
        if self.word_mask_key and self.word_mask_key in d:
            valid = torch.as_tensor(d[self.word_mask_key]).bool().tolist()
            words = {j: w for j, w in words.items() if valid[j]}
        return ids, words


class FindingZoneMaskd(MapTransform):
    """Draw the zones of an item's findings into a ``(1, W, H)`` float mask beside the image.

    Args:
        keys: the image key whose (already loaded) geometry the mask takes.
        findings_key: list of ``{"name", "zone", "box"}`` findings.
        zones_key: ``{zone name: [x, y, width, height]}`` of the item.
        output_key: where the mask goes.
        finding_names: findings whose zones count (default: all with a zone).
        use_zone: draw the finding's whole zone rectangle (default) instead of its own box.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        findings_key: str = "findings",
        zones_key: str = "zones",
        output_key: str = "zone_mask",
        finding_names: Sequence[str] | None = None,
        use_zone: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.findings_key, self.zones_key, self.output_key = findings_key, zones_key, output_key
        self.finding_names = None if finding_names is None else set(finding_names)
        self.use_zone = use_zone

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            mask = torch.zeros((1, *image.shape[1:]), dtype=torch.float32)
            zones = d.get(self.zones_key) or {}
            for finding in d.get(self.findings_key) or []:
                if self.finding_names is not None and finding.get("name") not in self.finding_names:
                    continue
                box = zones.get(finding.get("zone")) if self.use_zone else finding.get("box")
                if not box:
                    continue
                x, y, w, h = (int(round(v)) for v in box)
                mask[0, max(x, 0) : x + w, max(y, 0) : y + h] = 1.0
            d[self.output_key] = _like(mask, image)
        return d


class LesionMaskd(MapTransform):
    """Draw each finding's own box into a ``(C, W, H)`` float mask, one channel per lesion class.

    Channel ``c`` is the union of the boxes of the item's findings of class :data:`LESION_CLASSES` ``[c]`` (two
    opacities in one study share the opacity channel: a word "opacity" may point at either). The boxes are
    ``[x, y, width, height]`` in the loaded image's pixels (``image[0, x:x+w, y:y+h]``), so MONAI's spatial
    transforms carry the mask with the image.

    Args:
        keys: the image key whose (already loaded) geometry the mask takes.
        findings_key: list of ``{"name", "box"}`` findings.
        output_key: where the mask goes.
        classes: ``{class: finding names}``, in channel order (default :data:`LESION_FINDINGS`).
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        findings_key: str = "findings",
        output_key: str = "lesion_mask",
        classes: Mapping[str, Sequence[str]] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.findings_key, self.output_key = findings_key, output_key
        self.classes = {name: tuple(findings) for name, findings in (classes or LESION_FINDINGS).items()}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            mask = torch.zeros((len(self.classes), *image.shape[1:]), dtype=torch.float32)
            for channel, names in enumerate(self.classes.values()):
                for finding in d.get(self.findings_key) or []:
                    box = finding.get("box")
                    if finding.get("name") not in names or not box or min(box[2:]) <= 0:
                        continue
                    x, y, w, h = (int(round(v)) for v in box)
                    mask[channel, max(x, 0) : x + w, max(y, 0) : y + h] = 1.0
            d[self.output_key] = _like(mask, image)
        return d


class ZoneWordMaskd(_WordTargets):
    """Mark the words that name a zone (:data:`ZONE_WORDS`), at the first piece of each word.

    Args:
        keys: the ``input_ids`` key.
        tokenizer: the Hugging Face tokenizer (object, folder or hub id) that produced the ids.
        output_key: where the ``(T,)`` bool mask goes.
        words: the zone vocabulary.
        word_mask_key: restrict to tokens of this word mask when present.
        word_start_key: the first-piece positions of the words (:class:`TokenizeReportd`); when absent from the
            item, single tokens are matched.
    """

    def __init__(
        self,
        keys: KeysCollection = "input_ids",
        tokenizer: Any = None,
        output_key: str = "pointing_mask",
        words: Sequence[str] = tuple(sorted(ZONE_WORDS)),
        word_mask_key: str | None = "word_mask",
        word_start_key: str | None = "word_start",
        local_files_only: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, tokenizer, word_start_key, word_mask_key, local_files_only, allow_missing_keys)
        self.vocabulary = frozenset(w.lower() for w in words)
        self.output_key, self.background = output_key, False

    def value(self, word: str) -> bool:
        return word in self.vocabulary


class LesionWordd(_WordTargets):
    """Mark the words that name a lesion with the index of its class, at the first piece of each word.

    Args:
        keys: the ``input_ids`` key.
        tokenizer: the Hugging Face tokenizer (object, folder or hub id) that produced the ids.
        output_key: where the ``(T,)`` long tensor goes: the class index in :data:`LESION_CLASSES` order at the
            first piece of a lesion word, ``-1`` elsewhere.
        words: ``{class: words}`` in channel order (default :data:`LESION_WORDS`; the order must match
            :class:`LesionMaskd`'s classes).
        word_mask_key: restrict to tokens of this word mask when present.
        word_start_key: the first-piece positions of the words.
    """

    def __init__(
        self,
        keys: KeysCollection = "input_ids",
        tokenizer: Any = None,
        output_key: str = "lesion_word",
        words: Mapping[str, Sequence[str]] | None = None,
        word_mask_key: str | None = "word_mask",
        word_start_key: str | None = "word_start",
        local_files_only: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, tokenizer, word_start_key, word_mask_key, local_files_only, allow_missing_keys)
        self.word_class = {w.lower(): c for c, group in enumerate((words or LESION_WORDS).values()) for w in group}
        self.output_key, self.background = output_key, -1

    def value(self, word: str) -> int:
        return self.word_class.get(word, -1)
