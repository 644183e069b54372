"""A small, deterministic BERT WordPiece tokenizer trained on report text.

The demo bundles need a tokenizer that exists without network access; this module learns one from the
training reports and saves it as a folder that ``transformers.AutoTokenizer.from_pretrained(folder,
local_files_only=True)`` loads as a fast BERT tokenizer.

Why not ``tokenizers.trainers.WordPieceTrainer``: it breaks ties between equally frequent merges in hash-map
order, so two runs on the same text give different vocabularies. Here the normaliser, the pre-tokeniser, the
WordPiece model and the serialisation are the ``tokenizers`` library's, and only the merge learning (the
same frequency-ranked merges that ``WordPieceTrainer`` performs through its BPE trainer) is done in Python
with ties broken by the tokens themselves. The saved files are byte-identical for the same input.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

__all__ = ["SPECIAL_TOKENS", "CONTINUING_SUBWORD_PREFIX", "learn_wordpiece_vocab", "train_wordpiece_tokenizer"]

logger = logging.getLogger(__name__)

#: BERT's special tokens, in the order of their ids (``[PAD]`` = 0).
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CONTINUING_SUBWORD_PREFIX = "##"


def _pairs(symbols: tuple[str, ...]) -> Counter:
    return Counter(zip(symbols[:-1], symbols[1:], strict=True))


def _merge_symbols(symbols: tuple[str, ...], pair: tuple[str, str], merged: str) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == pair[0] and symbols[i + 1] == pair[1]:
            out.append(merged)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def learn_wordpiece_vocab(word_counts: dict[str, int], vocab_size: int, min_frequency: int = 2) -> list[str]:
    """Learn a WordPiece vocabulary by frequency-ranked merges, deterministically.

    Every word starts as its characters, non-initial ones carrying the ``##`` prefix. The most frequent
    adjacent pair is merged repeatedly (ties: the lexicographically smallest pair) until the vocabulary
    reaches ``vocab_size`` or no pair occurs ``min_frequency`` times.

    Args:
        word_counts: pre-tokenised words and their counts.
        vocab_size: the largest vocabulary, special tokens included.
        min_frequency: the smallest pair count that is still merged.

    Returns:
        The tokens in id order: special tokens, the sorted alphabet, then merged tokens in merge order.

    Raises:
        ValueError: if ``vocab_size`` cannot hold the special tokens.
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}")
    words = sorted(word_counts)
    counts = [int(word_counts[w]) for w in words]
    symbols = [tuple(w[:1]) + tuple(CONTINUING_SUBWORD_PREFIX + c for c in w[1:]) for w in words]
    vocab = list(SPECIAL_TOKENS) + sorted({s for word in symbols for s in word} - set(SPECIAL_TOKENS))
    known = set(vocab)

    pair_counts: Counter = Counter()
    where: dict[tuple[str, str], set[int]] = {}
    for index, (word, count) in enumerate(zip(symbols, counts, strict=True)):
        for pair, k in _pairs(word).items():
            pair_counts[pair] += k * count
            where.setdefault(pair, set()).add(index)
    heap = [(-c, pair) for pair, c in pair_counts.items()]
    heapq.heapify(heap)

    while len(vocab) < vocab_size and heap:
        negative_count, pair = heapq.heappop(heap)
        current = pair_counts.get(pair, 0)
        if current <= 0:
            continue
        if -negative_count != current:
            heapq.heappush(heap, (-current, pair))
            continue
        if current < min_frequency:
            break
        merged = pair[0] + pair[1][len(CONTINUING_SUBWORD_PREFIX) :]
        if merged not in known:
            vocab.append(merged)
            known.add(merged)
        touched: set[tuple[str, str]] = set()
        for index in sorted(where.pop(pair, set())):
            old = symbols[index]
            new = _merge_symbols(old, pair, merged)
            if new == old:
                continue
            for p, k in _pairs(old).items():
                pair_counts[p] -= k * counts[index]
                touched.add(p)
            for p, k in _pairs(new).items():
                pair_counts[p] += k * counts[index]
                where.setdefault(p, set()).add(index)
                touched.add(p)
            symbols[index] = new
        pair_counts.pop(pair, None)
        for p in sorted(touched - {pair}):
            if pair_counts.get(p, 0) > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
    return vocab


def train_wordpiece_tokenizer(
    texts: Iterable[str],
    out_dir: str | Path,
    vocab_size: int = 2000,
    lowercase: bool = True,
    min_frequency: int = 2,
    model_max_length: int = 512,
) -> Path:
    """Train a BERT WordPiece tokenizer on ``texts`` and save it as a Hugging Face tokenizer folder.

    Args:
        texts: the training texts (for example the training split's reports).
        out_dir: the folder to write (created if missing): ``tokenizer.json``, ``tokenizer_config.json``
            and ``vocab.txt``.
        vocab_size: the largest vocabulary, special tokens included.
        lowercase: lower-case (and strip accents) before tokenising, as uncased BERT does.
        min_frequency: the smallest pair count that is still merged.
        model_max_length: the tokenizer's ``model_max_length``.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    word_counts: Counter = Counter()
    for text in texts:
        word_counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    vocab = learn_wordpiece_vocab(dict(word_counts), vocab_size, min_frequency)

    tokenizer = Tokenizer(models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    cls_id, sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer.decoder = decoders.WordPiece(prefix=CONTINUING_SUBWORD_PREFIX)
    fast = BertTokenizerFast(
        tokenizer_object=tokenizer,
        do_lower_case=lowercase,
        model_max_length=model_max_length,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    (out / "vocab.txt").write_text("".join(f"{token}\n" for token in vocab), encoding="utf-8")
    logger.debug("WordPiece tokenizer: %d tokens from %d distinct words in %s", len(vocab), len(word_counts), out)
    return out
