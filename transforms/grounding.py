"""Ground-truth transforms for measuring patch–word grounding (the STA pointing games).

* :class:`FindingZoneMaskd` draws the lung zones of an item's findings (``[x, y, width, height]`` DICOM
  pixel boxes, as the demo datalist gives them) into a ``(1, W, H)`` mask in the loaded image's geometry, so
  the same MONAI spatial transforms that resize, pad and crop the image carry the zone along.
* :class:`LesionMaskd` draws each finding's *own* box into one channel per lesion class
  (:data:`LESION_CLASSES`), the truth of the lesion pointing game.
* :class:`ZoneWordMaskd` marks the words of a tokenised report that name a zone (``right``, ``lower``,
  ``apical``...) and :class:`LesionWordd` the words that name a lesion (``opacity``, ``pneumothorax``...), at
  the first piece of each word (whole words, also when the tokenizer splits them).
* :class:`SentenceIndexd` numbers the sentences of a tokenised report (the text pointer of the lesion game reads
  the zone words of a finding word's sentence), and :class:`FindingMentiond` marks the finding words a report
  *states* (not negated), with the side its sentence gives: the content words of STA's cross-image term and the
  "same finding in the same place" that it leaves out of a word's negatives (METHOD.md §2).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from .tokenizer import load_tokenizer

__all__ = [
    "LESION_CLASSES",
    "LESION_FINDINGS",
    "LESION_WORDS",
    "ZONE_WORDS",
    "FindingZoneMaskd",
    "LesionMaskd",
    "LesionWordd",
    "NEGATION_CUES",
    "SIDE_CODES",
    "FindingMentiond",
    "SentenceIndexd",
    "ZoneWordMaskd",
    "first_piece_words",
    "sentence_index",
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


NEGATION_CUES = frozenset({"no", "not", "without", "negative", "free", "absent", "absence", "resolved"})
"""Words that make a sentence *negative* for :class:`FindingMentiond`: a finding word in such a sentence is not
stated ("No pleural effusion or pneumothorax.", "without focal consolidation"). Hedges ("cannot be excluded",
"possible", "may represent") are not negations: the demo labels hedged findings 1, as CheXpert's U-ones policy
does, and they are drawn in the image. The sentence-level scope is NegEx's simplest form; the demo grammar
keeps every sentence wholly positive or wholly negative, real reports do not always (see issue 25's labeler)."""

SIDE_CODES = {"right": 1, "left": 2}
"""The side code of :class:`FindingMentiond`: 0 = none or both sides, 1 = the patient's right, 2 = left."""

_BILATERAL_WORDS = frozenset({"bilateral", "bilaterally", "both", "bibasilar", "bibasal"})
_SENTENCE_ENDS = frozenset({".", "!", "?"})


def sentence_index(input_ids: torch.Tensor, tokens: Sequence[str], special_ids: Sequence[int] = ()) -> torch.Tensor:
    """The sentence number of every token of a tokenised report; ``-1`` for special tokens.

    A sentence ends after a ``.``, ``!`` or ``?`` token (numbered IMPRESSION items, "1. ...", therefore start a
    sentence of their own after their number). Section headers are gone by then (:class:`ExtractReportSectionsd`
    composes the sections into one text).

    Args:
        input_ids: ``(T,)`` token ids.
        tokens: the vocabulary, ``tokens[id]`` the token string.
        special_ids: ids of special tokens (``[CLS]``, ``[SEP]``, ``[PAD]``...), which belong to no sentence.

    Returns:
        ``(T,)`` long tensor.
    """
    special = set(special_ids)
    out = torch.full((len(input_ids),), -1, dtype=torch.long)
    sentence = 0
    for position, token_id in enumerate(torch.as_tensor(input_ids).tolist()):
        if token_id in special:
            continue
        out[position] = sentence
        if 0 <= token_id < len(tokens) and tokens[token_id] in _SENTENCE_ENDS:
            sentence += 1
    return out


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
            (:func:`~sista_monai.transforms.tokenizer.word_positions`); ``None`` treats every non-special token as a
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
        self.special_ids = tuple(getattr(tokenizer, "all_special_ids", ()))
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


class SentenceIndexd(_WordTargets):
    """Number the sentences of a tokenised report (:func:`sentence_index`): ``(T,)`` long, ``-1`` for special tokens.

    Args:
        keys: the ``input_ids`` key.
        tokenizer: the Hugging Face tokenizer (object, folder or hub id) that produced the ids.
        output_key: where the sentence numbers go.
    """

    def __init__(
        self,
        keys: KeysCollection = "input_ids",
        tokenizer: Any = None,
        output_key: str = "sentence_id",
        local_files_only: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, tokenizer, None, None, local_files_only, allow_missing_keys)
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = sentence_index(torch.as_tensor(d[key]), self.tokens, self.special_ids)
        return d


class FindingMentiond(_WordTargets):
    """Mark the finding words that a report *states*, with their class and the side their sentence names.

    A finding word (:data:`LESION_WORDS` by default: "opacity", "consolidation", "pneumonia", "pneumothorax",
    "effusion"...) is stated when its sentence holds no negation cue (:data:`NEGATION_CUES`; sentences as
    :func:`sentence_index` numbers them). Its side is the patient's side the sentence names (:data:`SIDE_CODES`):
    ``right`` → 1, ``left`` → 2, neither, both or a bilateral word → 0. These are the *content words* of STA's
    cross-image term and the "same finding in the same place" it leaves out of a word's negatives
    (:class:`~sista_monai.losses.SparseTokenAlignmentLoss`, METHOD.md §2). Everything is read from the text; no
    label or box is used, so the same transform serves MIMIC-CXR.

    Why rules here and not medspacy/negspacy: these run in the data pipeline of every training item and must work
    offline with nothing to download; on the demo grammar (every sentence wholly positive or wholly negative) the
    sentence-level rule recovers the drawn findings exactly. A clinical labeler for real reports is issue 25's.

    Args:
        keys: the ``input_ids`` key.
        tokenizer: the Hugging Face tokenizer (object, folder or hub id) that produced the ids.
        class_key: where the ``(T,)`` long class index goes (``-1`` for every token that is not the first piece of
            a stated finding word).
        side_key: where the ``(T,)`` long side code goes (0 where ``class_key`` is ``-1``).
        words: ``{class: words}`` in class order (default :data:`LESION_WORDS`).
        negation_cues: the words that make a sentence negative.
        word_mask_key: restrict to tokens of this word mask when present.
        word_start_key: the first-piece positions of the words.
    """

    def __init__(
        self,
        keys: KeysCollection = "input_ids",
        tokenizer: Any = None,
        class_key: str = "finding_word",
        side_key: str = "finding_side",
        words: Mapping[str, Sequence[str]] | None = None,
        negation_cues: Sequence[str] = tuple(sorted(NEGATION_CUES)),
        word_mask_key: str | None = "word_mask",
        word_start_key: str | None = "word_start",
        local_files_only: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, tokenizer, word_start_key, word_mask_key, local_files_only, allow_missing_keys)
        self.word_class = {w.lower(): c for c, group in enumerate((words or LESION_WORDS).values()) for w in group}
        self.negation_cues = frozenset(w.lower() for w in negation_cues)
        self.class_key, self.side_key = class_key, side_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            ids, words = self.words(d, key)
            sentences = sentence_index(ids, self.tokens, self.special_ids).tolist()
            by_sentence: dict[int, list[tuple[int, str]]] = {}
            for position, word in words.items():
                by_sentence.setdefault(sentences[position], []).append((position, word))
            classes = torch.full(ids.shape, -1, dtype=torch.long)
            sides = torch.zeros(ids.shape, dtype=torch.long)
            for sentence in by_sentence.values():
                vocabulary = {word for _, word in sentence}
                if vocabulary & self.negation_cues:
                    continue
                named = {SIDE_CODES[w] for w in vocabulary if w in SIDE_CODES}
                side = named.pop() if len(named) == 1 and not vocabulary & _BILATERAL_WORDS else 0
                for position, word in sentence:
                    if word in self.word_class:
                        classes[position], sides[position] = self.word_class[word], side
            d[self.class_key], d[self.side_key] = classes, sides
        return d


SentenceIndexD = SentenceIndexDict = SentenceIndexd
FindingMentionD = FindingMentionDict = FindingMentiond
