"""Tokenising reports: the one tokenizer loader, fixed-length tokenisation and the word layout of the tokens.

:func:`load_tokenizer` loads a Hugging Face tokenizer once for every consumer; :class:`ReportTokenizer` turns a report
text into fixed-length ``input_ids``, ``attention_mask`` and ``word_mask`` tensors; :func:`word_positions` finds
where each word starts and which earlier word it repeats. The MONAI transforms around it are
:class:`~sista_monai.transforms.report.TokenizeReport` and its dictionary form.
"""

from __future__ import annotations

import logging
import os
import unicodedata
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["ReportTokenizer", "load_tokenizer", "word_positions"]

logger = logging.getLogger("sista_monai.transforms.report")  # the report pipeline logs under one name, as before


def _is_punctuation_char(char: str) -> bool:
    """BERT's definition: Unicode punctuation, or any non-alphanumeric printable ASCII character."""
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


_SUBWORD_MARKERS = ("##", "\u0120", "\u2581", "\u010a")


def _is_punctuation_token(token: str) -> bool:
    """Whether a vocabulary entry carries no word: only punctuation once subword markers are removed."""
    surface = token
    for marker in _SUBWORD_MARKERS:
        if surface.startswith(marker):
            surface = surface[len(marker) :]
    surface = surface.strip()
    return all(_is_punctuation_char(char) for char in surface)


def word_positions(
    input_ids: torch.Tensor, word_mask: torch.Tensor, word_ids: Sequence[int | None]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each word of a tokenised report starts, and which earlier occurrence of the same word it repeats.

    A WordPiece tokenizer splits a rare word into pieces (``"pneumothorax"`` → ``"pneumo"``, ``"##thorax"``);
    token-level alignment should see the word once (MGCA aggregates a word's pieces), and a word written twice
    (FINDINGS echoed in IMPRESSION) is the same word, not a negative of itself.

    Args:
        input_ids: ``(T,)`` token ids.
        word_mask: ``(T,)`` bool, the tokens that count as words.
        word_ids: the fast tokenizer's word index of every token (``None`` for special tokens), e.g.
            ``BatchEncoding.word_ids()``.

    Returns:
        ``(word_start, word_group)``, two ``(T,)`` long tensors, ``-1`` outside ``word_mask``: the position of
        the first piece of each token's word, and the position of the first piece of the first occurrence of
        the same word (same piece ids) in the report.
    """
    length = len(input_ids)
    word_start = torch.full((length,), -1, dtype=torch.long)
    word_group = torch.full((length,), -1, dtype=torch.long)
    ids = input_ids.tolist()
    valid = word_mask.tolist()
    spans: list[tuple[int, int]] = []
    previous: int | None = None
    for position in range(length):
        word = word_ids[position] if position < len(word_ids) else None
        if not valid[position] or word is None:
            previous = None
            continue
        if word != previous or not spans:
            spans.append((position, position + 1))
        else:
            spans[-1] = (spans[-1][0], position + 1)
        previous = word
    first_seen: dict[tuple[int, ...], int] = {}
    for start, end in spans:
        group = first_seen.setdefault(tuple(ids[start:end]), start)
        word_start[start:end] = start
        word_group[start:end] = group
    return word_start, word_group


def load_tokenizer(
    name_or_path: str | os.PathLike | Any, local_files_only: bool = True, revision: str | None = None
) -> Any:
    """The Hugging Face tokenizer of a local folder or hub id, loaded once (``AutoTokenizer.from_pretrained``).

    The one loader of the project: a bundle builds its ``loaded_tokenizer`` component with it and hands the object
    to every consumer (the report transforms, the zone/lesion word transforms, the text encoder, the heat maps,
    pretraining inference); each consumer also still accepts a folder or hub id, which it loads through here.

    Args:
        name_or_path: a local folder, a hub id, or an already-built tokenizer (returned as is).
        local_files_only: load from the local folder or cache only (no hub download).
        revision: the hub revision (branch, tag or commit) to load; pin a commit for reproducibility.

    Returns:
        The tokenizer.

    Raises:
        OSError: when the tokenizer cannot be loaded (the message names it).
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        return name_or_path
    from transformers import AutoTokenizer

    name = os.fspath(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=local_files_only, revision=revision)
    except (OSError, ValueError) as err:
        raise OSError(f"cannot load tokenizer {name!r}: {err}") from err


class ReportTokenizer:
    """Fixed-length tokenisation of report texts with a Hugging Face fast tokenizer.

    Every report becomes ``max_length`` token ids: special tokens added, padded to ``max_length``,
    truncated when longer (not an error; the closing special token such as ``[SEP]`` is kept). Truncated
    reports are counted in :attr:`truncated_count`; the first truncation is logged at INFO and every one
    at DEBUG, with counts only, never the text. The counters are per process (each DataLoader worker has
    its own).

    ``word_mask`` marks the tokens that count as words for token-level (patch-word) alignment: not a
    special token, not padding and, with ``exclude_punctuation``, not a token made only of punctuation
    (``"."``, ``","``, ``"##/"``). Word-piece continuations (``"##ing"``) are words.

    Args:
        tokenizer: a hub id or a local folder (loaded with :func:`load_tokenizer`), or an already-built fast
            tokenizer object.
        max_length: the length of every output, special tokens included.
        exclude_punctuation: leave pure-punctuation tokens out of ``word_mask``.
        local_files_only: load from the local folder or cache only (no hub download).
        revision: the hub revision (branch, tag or commit) to load; pin a commit for reproducibility.

    Raises:
        TypeError: when the tokenizer is a slow (pure-Python) tokenizer.
        ValueError: when it has no padding token or ``max_length`` leaves no room for text.
        OSError: when the tokenizer cannot be loaded.
    """

    def __init__(
        self,
        tokenizer: str | os.PathLike | Any,
        max_length: int = 112,
        exclude_punctuation: bool = True,
        local_files_only: bool = True,
        revision: str | None = None,
    ) -> None:
        tokenizer = load_tokenizer(tokenizer, local_files_only, revision)
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError(
                f"{type(tokenizer).__name__} is not a fast tokenizer: ReportTokenizer needs a Hugging Face fast "
                "(Rust `tokenizers`) tokenizer, i.e. a folder or hub id with tokenizer.json or a "
                "PreTrainedTokenizerFast object"
            )
        if tokenizer.pad_token_id is None:
            raise ValueError(f"{type(tokenizer).__name__} has no padding token; set tokenizer.pad_token first")
        n_special = tokenizer.num_special_tokens_to_add(pair=False)
        if max_length <= n_special:
            raise ValueError(f"max_length={max_length} leaves no room for text after {n_special} special tokens")
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.exclude_punctuation = exclude_punctuation
        self.truncated_count = 0
        self.report_count = 0
        self._non_word = self._non_word_table()

    def _non_word_table(self) -> torch.Tensor:
        """A boolean per vocabulary id: True for special tokens and, optionally, pure punctuation."""
        size = len(self.tokenizer)
        non_word = torch.zeros(size, dtype=torch.bool)
        special = [i for i in self.tokenizer.all_special_ids if 0 <= i < size]
        non_word[special] = True
        if self.exclude_punctuation:
            tokens = self.tokenizer.convert_ids_to_tokens(list(range(size)))
            punctuation = [i for i, token in enumerate(tokens) if token is None or _is_punctuation_token(token)]
            non_word[punctuation] = True
        return non_word

    def _was_truncated(self, encoding: Any, text: str) -> bool:
        encodings = getattr(encoding, "encodings", None)
        if encodings:
            return bool(encodings[0].overflowing)
        return len(self.tokenizer(text, add_special_tokens=True)["input_ids"]) > self.max_length

    def __call__(self, text: str) -> dict[str, torch.Tensor]:
        """Tokenise one report.

        Args:
            text: the cleaned report text.

        Returns:
            ``input_ids`` (long), ``attention_mask`` (long), ``word_mask`` (bool), and ``word_start`` and
            ``word_group`` (long, see :func:`word_positions`), each a 1-D tensor of length ``max_length``.

        Raises:
            TypeError: when ``text`` is not a string.
        """
        if not isinstance(text, str):
            raise TypeError(f"ReportTokenizer expects str, got {type(text).__name__}")
        encoding = self.tokenizer(
            text,
            max_length=self.max_length,
            padding="max_length",
            truncation=True,
            return_attention_mask=True,
        )
        input_ids = torch.as_tensor(encoding["input_ids"], dtype=torch.long)
        attention_mask = torch.as_tensor(encoding["attention_mask"], dtype=torch.long)
        self.report_count += 1
        if self._was_truncated(encoding, text):
            self.truncated_count += 1
            if self.truncated_count == 1:
                logger.info(
                    "a report is longer than max_length=%d tokens and was truncated; truncations are counted "
                    "in ReportTokenizer.truncated_count and logged at DEBUG",
                    self.max_length,
                )
            logger.debug(
                "report truncated to max_length=%d tokens (%d of %d reports truncated so far)",
                self.max_length,
                self.truncated_count,
                self.report_count,
            )
        word_mask = attention_mask.bool() & ~self._non_word[input_ids.clamp(0, len(self._non_word) - 1)]
        word_start, word_group = word_positions(input_ids, word_mask, encoding.word_ids())
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "word_mask": word_mask,
            "word_start": word_start,
            "word_group": word_group,
        }
