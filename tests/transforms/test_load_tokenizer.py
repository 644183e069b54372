"""One tokenizer loader: a bundle builds the tokenizer once and hands the object to every consumer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from sista_monai.networks import HuggingFaceTextEncoder
from sista_monai.transforms import LesionWordd, TokenizeReportd, ZoneWordMaskd, load_tokenizer


def test_load_tokenizer_loads_a_folder_once_and_passes_objects_through(
    split_word_tokenizer: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenizer = load_tokenizer(split_word_tokenizer)
    assert load_tokenizer(str(split_word_tokenizer)).get_vocab() == tokenizer.get_vocab()
    assert load_tokenizer(tokenizer) is tokenizer
    with pytest.raises(OSError, match="cannot load tokenizer"):
        load_tokenizer(split_word_tokenizer.parent / "absent")

    loads: list[str] = []
    original = transformers.AutoTokenizer.from_pretrained

    def counting(*args: object, **kwargs: object) -> object:
        loads.append(str(args[0]))
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", counting)
    text = "Small right pleural effusion."
    by_object = TokenizeReportd("report", tokenizer, max_length=16)({"report": text})
    by_object = ZoneWordMaskd("input_ids", tokenizer)(LesionWordd("input_ids", tokenizer)(by_object))
    config = {"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16}
    encoder = HuggingFaceTextEncoder(config=config, tokenizer=tokenizer)
    assert loads == []  # given the object, no consumer reads the folder again
    by_path = TokenizeReportd("report", split_word_tokenizer, max_length=16)({"report": text})
    by_path = ZoneWordMaskd("input_ids", split_word_tokenizer)(LesionWordd("input_ids", split_word_tokenizer)(by_path))
    assert len(loads) == 3  # a path still works, loaded by each consumer
    for key in ("input_ids", "word_mask", "word_start", "pointing_mask", "lesion_word"):
        assert torch.equal(torch.as_tensor(by_object[key]), torch.as_tensor(by_path[key])), key
    assert encoder.model.config.vocab_size == len(tokenizer)
