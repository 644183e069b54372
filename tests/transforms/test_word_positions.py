"""Tests of the word layout of a tokenised report: ``word_positions``, ``ReportTokenizer`` and ``TokenizeReportd``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.data import DataLoader, Dataset

from sista_monai.transforms.report import TokenizeReportd
from sista_monai.transforms.tokenizer import ReportTokenizer, word_positions


@pytest.fixture(scope="module")
def report_tokenizer(split_word_tokenizer: Path) -> ReportTokenizer:
    return ReportTokenizer(str(split_word_tokenizer), max_length=40, local_files_only=True)


def test_word_positions_hand_made_ids() -> None:
    # position: 0      1   2   3   4    5   6   7   8   9   10  11     12    13    14
    # token:    [CLS]  a   ##b ##c  ,   a   ##b ##c d   a   ##b e      d     [SEP] [PAD]
    # word id:  None   0   0   0    1   2   2   2   3   4   4   5      6     None  None
    ids = torch.tensor([2, 10, 11, 12, 7, 10, 11, 12, 13, 10, 11, 14, 13, 3, 0])
    word_ids = [None, 0, 0, 0, 1, 2, 2, 2, 3, 4, 4, 5, 6, None, None]
    mask = torch.tensor([False, True, True, True, False, True, True, True, True, True, True, True, True, False, False])
    start, group = word_positions(ids, mask, word_ids)
    assert start.dtype == torch.long and group.dtype == torch.long
    assert start.tolist() == [-1, 1, 1, 1, -1, 5, 5, 5, 8, 9, 9, 11, 12, -1, -1]
    # word 2 repeats word 0 (same pieces); word 4 ("a ##b") is a prefix of it, not the same word; the single-piece
    # word 6 repeats word 3 and word 5 directly follows word 4 without a separator
    assert group.tolist() == [-1, 1, 1, 1, -1, 1, 1, 1, 8, 9, 9, 11, 8, -1, -1]


def test_word_positions_tokens_outside_the_word_mask_and_short_word_ids() -> None:
    ids = torch.tensor([2, 20, 21, 20, 3, 0])
    mask = torch.tensor([False, True, True, True, False, False])
    # every non-special token belongs to word 0 except the last; word_ids shorter than the ids (pad left out)
    start, group = word_positions(ids, mask, [None, 0, 0, 1, None])
    assert start.tolist() == [-1, 1, 1, 3, -1, -1]
    assert group.tolist() == [-1, 1, 1, 3, -1, -1]  # "20" alone is not the word "20 21"
    # a token outside the word mask (e.g. punctuation) is -1 even though it has a word id
    start, group = word_positions(ids, torch.tensor([False, True, True, False, False, False]), [None, 0, 0, 1, None])
    assert start.tolist() == [-1, 1, 1, -1, -1, -1] and group.tolist() == [-1, 1, 1, -1, -1, -1]
    start, group = word_positions(ids, torch.zeros(6, dtype=torch.bool), [None, 0, 0, 1, None])
    assert start.tolist() == [-1] * 6 and group.tolist() == [-1] * 6


def _expected_layout(tokenizer, words: list[str], max_length: int) -> tuple[list[int], list[int]]:
    """The word starts and groups of ``[CLS] words... [SEP] [PAD]...`` laid out word by word."""
    start, group = [-1], [-1]
    first_seen: dict[tuple[str, ...], int] = {}
    for word in words:
        pieces = tuple(tokenizer.tokenize(word))
        if all(not c.isalnum() for c in word):
            start += [-1] * len(pieces)
            group += [-1] * len(pieces)
            continue
        position = len(start)
        first = first_seen.setdefault(pieces, position)
        start += [position] * len(pieces)
        group += [first] * len(pieces)
    start, group = start[: max_length - 1], group[: max_length - 1]
    pad = max_length - len(start)
    return start + [-1] * pad, group + [-1] * pad


def test_report_tokenizer_multi_piece_and_repeated_words(report_tokenizer: ReportTokenizer) -> None:
    hf = report_tokenizer.tokenizer
    pieces = hf.tokenize("pneumothorax")
    assert len(pieces) > 1 and pieces[0] == "p" and all(p.startswith("##") for p in pieces[1:])
    assert hf.tokenize("right") == ["right"] and hf.tokenize("effusion") == ["effusion"]
    assert hf.tokenize("effusions") == ["effusion", "##s"]
    n = len(pieces)

    out = report_tokenizer("Right pneumothorax. No effusion, right pneumothorax, effusions.")
    assert set(out) == {"input_ids", "attention_mask", "word_mask", "word_start", "word_group"}
    for name in ("word_start", "word_group"):
        assert out[name].shape == (40,) and out[name].dtype == torch.long
    tokens = hf.convert_ids_to_tokens(out["input_ids"].tolist())
    # [CLS] right p ##... . no effusion , right p ##... , effusion ##s . [SEP] [PAD]...
    right, pneumo = 1, 2
    period = pneumo + n
    no, effusion, comma = period + 1, period + 2, period + 3
    right_2, pneumo_2 = comma + 1, comma + 2
    comma_2 = pneumo_2 + n
    effusions, sep = comma_2 + 1, comma_2 + 4
    assert tokens[period] == "." and tokens[comma] == "," and tokens[effusions : effusions + 2] == ["effusion", "##s"]
    assert tokens[sep] == "[SEP]" and tokens[sep + 1 :] == ["[PAD]"] * (40 - sep - 1)

    start = [-1] * 40
    group = [-1] * 40
    for begin, length, first in [
        (right, 1, right),
        (pneumo, n, pneumo),
        (no, 1, no),
        (effusion, 1, effusion),
        (right_2, 1, right),  # the second "right" repeats the first
        (pneumo_2, n, pneumo),  # the second "pneumothorax" repeats the first
        (effusions, 2, effusions),  # "effusion ##s" is another word than "effusion"
    ]:
        start[begin : begin + length] = [begin] * length
        group[begin : begin + length] = [first] * length
    assert out["word_start"].tolist() == start
    assert out["word_group"].tolist() == group
    # the layout agrees with the word mask: -1 exactly outside it (special, punctuation and pad tokens)
    assert ((out["word_start"] >= 0) == out["word_mask"]).all()
    expected = _expected_layout(
        hf, ["right", "pneumothorax", ".", "no", "effusion", ",", "right", "pneumothorax", ",", "effusions", "."], 40
    )
    assert (out["word_start"].tolist(), out["word_group"].tolist()) == expected


def test_truncated_repeat_is_a_different_word(split_word_tokenizer: Path) -> None:
    probe = ReportTokenizer(str(split_word_tokenizer), max_length=64)
    n = len(probe.tokenizer.tokenize("pneumothorax"))
    # [CLS] right p ##.. right p ##.. [SEP]: cut the second "pneumothorax" after its first two pieces
    length = 1 + (1 + n) + 1 + 2 + 1
    tokenizer = ReportTokenizer(str(split_word_tokenizer), max_length=length)
    out = tokenizer("right pneumothorax right pneumothorax")
    second = 1 + (1 + n) + 1
    assert out["word_start"].tolist() == [-1, 1] + [2] * n + [2 + n, second, second, -1]
    assert out["word_group"].tolist() == [-1, 1] + [2] * n + [1, second, second, -1]
    assert tokenizer.truncated_count == 1
    assert (
        out["word_start"].tolist()
        == _expected_layout(tokenizer.tokenizer, ["right", "pneumothorax", "right", "pneumothorax"], length)[0]
    )


def test_tokenize_reportd_writes_word_layout(report_tokenizer: ReportTokenizer) -> None:
    text = "No effusion. No pneumothorax."
    direct = report_tokenizer(text)
    out = TokenizeReportd("report", tokenizer=report_tokenizer)({"report": text})
    assert out["report"] == text
    for name in ("input_ids", "attention_mask", "word_mask", "word_start", "word_group"):
        assert torch.equal(out[name], direct[name]), name
    # "no" at 1 and again after "effusion ." at 4
    assert out["word_group"][4].item() == 1 and out["word_start"][4].item() == 4

    renamed = TokenizeReportd("report", tokenizer=report_tokenizer, word_start_key="starts", word_group_key="groups")(
        {"report": text}
    )
    assert "word_start" not in renamed and "word_group" not in renamed
    assert torch.equal(renamed["starts"], direct["word_start"]) and torch.equal(renamed["groups"], direct["word_group"])

    keyed = {
        name: f"{{key}}_{name}" for name in ("input_ids", "attention_mask", "word_mask", "word_start", "word_group")
    }
    two = TokenizeReportd(
        ["findings", "impression"],
        tokenizer=report_tokenizer,
        **{f"{name}_key": value for name, value in keyed.items()},
    )
    result = two({"findings": "right effusion, right", "impression": text})
    assert result["findings_word_group"][:5].tolist() == [-1, 1, 2, -1, 1]
    assert torch.equal(result["impression_word_start"], direct["word_start"])

    batch = next(
        iter(
            DataLoader(
                Dataset(
                    [{"report": text}, {"report": "right effusion"}],
                    transform=TokenizeReportd("report", tokenizer=report_tokenizer),
                ),
                batch_size=2,
            )
        )
    )
    assert batch["word_start"].shape == (2, 40) and batch["word_group"].dtype == torch.long
    assert batch["word_start"][1, :4].tolist() == [-1, 1, 2, -1]
