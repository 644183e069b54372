"""Tests of fixed-length report tokenisation with ``ReportTokenizer``: shapes, word mask, truncation, loading."""

from __future__ import annotations

import logging
import pickle

import pytest
import torch

from sista_monai.transforms.tokenizer import ReportTokenizer


@pytest.fixture(scope="module")
def report_tokenizer(wordpiece_folder) -> ReportTokenizer:
    return ReportTokenizer(str(wordpiece_folder), max_length=16, local_files_only=True)


def test_tokenizer_shapes_dtypes_and_word_mask(report_tokenizer):
    out = report_tokenizer("The heart size is normal, lungs are clear.")
    assert set(out) == {"input_ids", "attention_mask", "word_mask", "word_start", "word_group"}
    for value in out.values():
        assert value.shape == (16,)
    assert out["input_ids"].dtype == torch.long
    assert out["attention_mask"].dtype == torch.long
    assert out["word_mask"].dtype == torch.bool
    tokens = report_tokenizer.tokenizer.convert_ids_to_tokens(out["input_ids"].tolist())
    length = int(out["attention_mask"].sum())
    words = ["the", "heart", "size", "is", "normal", ",", "lungs", "are", "clear", "."]
    assert tokens[:length] == ["[CLS]", *words, "[SEP]"]
    assert tokens[length:] == ["[PAD]"] * (16 - length)
    assert out["attention_mask"].tolist() == [1] * length + [0] * (16 - length)
    expected = [token not in {"[CLS]", "[SEP]", "[PAD]", ",", "."} for token in tokens]
    assert out["word_mask"].tolist() == expected
    assert int(out["word_mask"].sum()) == 8
    assert report_tokenizer.truncated_count == 0


def test_tokenizer_keeps_punctuation_when_asked(wordpiece_folder):
    tokenizer = ReportTokenizer(str(wordpiece_folder), max_length=16, exclude_punctuation=False, local_files_only=True)
    out = tokenizer("Lungs are clear.")
    tokens = tokenizer.tokenizer.convert_ids_to_tokens(out["input_ids"].tolist())
    assert out["word_mask"].tolist() == [token not in {"[CLS]", "[SEP]", "[PAD]"} for token in tokens]
    assert out["word_mask"][tokens.index(".")]


def test_tokenizer_truncation_keeps_sep_and_is_counted(wordpiece_folder, caplog):
    tokenizer = ReportTokenizer(str(wordpiece_folder), max_length=8, local_files_only=True)
    sep_id = tokenizer.tokenizer.sep_token_id
    long_text = "No pleural effusion or pneumothorax. The heart size is normal. The lungs are clear."
    with caplog.at_level(logging.DEBUG, logger="sista_monai.transforms.report"):
        out = tokenizer(long_text)
        tokenizer(long_text)
    assert out["input_ids"].shape == (8,)
    assert out["input_ids"][-1].item() == sep_id
    assert out["attention_mask"].tolist() == [1] * 8
    assert not out["word_mask"][-1] and not out["word_mask"][0]
    assert tokenizer.truncated_count == 2
    tokenizer("Lungs clear.")
    assert tokenizer.truncated_count == 2
    assert tokenizer.report_count == 3
    info = [record for record in caplog.records if record.levelno == logging.INFO]
    assert len(info) == 1 and "max_length=8" in info[0].getMessage()
    assert any("2 of 2 reports truncated" in record.getMessage() for record in caplog.records)
    assert all("pleural" not in record.getMessage() for record in caplog.records)


def test_tokenizer_accepts_built_object_and_refuses_slow_ones(wordpiece_folder, tmp_path):
    from transformers import AutoTokenizer

    built = AutoTokenizer.from_pretrained(str(wordpiece_folder), local_files_only=True)
    from_object = ReportTokenizer(built, max_length=16)
    from_folder = ReportTokenizer(wordpiece_folder, max_length=16, local_files_only=True)
    text = "Small left pleural effusion."
    for name in ("input_ids", "attention_mask", "word_mask"):
        assert torch.equal(from_object(text)[name], from_folder(text)[name])
    restored = pickle.loads(pickle.dumps(from_folder))
    assert torch.equal(restored(text)["word_mask"], from_folder(text)["word_mask"])

    import transformers

    slow_class = getattr(transformers, "BertTokenizerLegacy", None)
    if slow_class is None:
        pytest.skip("this transformers version has no slow BertTokenizerLegacy to test the refusal with")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "heart", "normal", "."]) + "\n")
    with pytest.raises(TypeError, match="not a fast tokenizer"):
        ReportTokenizer(slow_class(str(vocab)))
    with pytest.raises(ValueError, match="no room"):
        ReportTokenizer(built, max_length=2)
    with pytest.raises(OSError, match="cannot load tokenizer"):
        ReportTokenizer(str(tmp_path / "absent"), local_files_only=True)
