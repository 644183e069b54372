"""Word-level text features (pieces averaged at the first piece) and loading pretrained weights into a config."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from sista_monai.networks import HuggingFaceTextEncoder
from sista_monai.networks.text_encoder import aggregate_word_pieces

TINY = {
    "vocab_size": 50,
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 32,
}


def test_aggregate_word_pieces_known_answer() -> None:
    # sample 0: [CLS] a ##b ##c d [SEP] ; sample 1: [CLS] e f ##g [SEP] [PAD]
    hidden = torch.tensor(
        [
            [[9.0, 9.0], [1.0, 0.0], [2.0, 4.0], [6.0, 2.0], [5.0, 5.0], [8.0, 8.0]],
            [[9.0, 9.0], [3.0, 1.0], [0.0, 2.0], [4.0, -2.0], [8.0, 8.0], [7.0, 7.0]],
        ]
    )
    word_mask = torch.tensor([[False, True, True, True, True, False], [False, True, True, True, False, False]])
    word_start = torch.tensor([[-1, 1, 1, 1, 4, -1], [-1, 1, 2, 2, -1, -1]])
    features, mask = aggregate_word_pieces(hidden, word_mask, word_start)
    expected = hidden.clone()
    expected[0, 1] = torch.tensor([3.0, 2.0])  # mean of (1, 0), (2, 4), (6, 2)
    expected[1, 2] = torch.tensor([2.0, 0.0])  # mean of (0, 2), (4, -2)
    torch.testing.assert_close(features, expected, rtol=0, atol=0)
    assert mask.tolist() == [[False, True, False, False, True, False], [False, True, True, False, False, False]]
    assert mask.dtype == torch.bool

    # a piece outside word_mask does not enter the mean even if it points at a word
    partial = word_mask.clone()
    partial[0, 3] = False
    features, mask = aggregate_word_pieces(hidden, partial, word_start)
    torch.testing.assert_close(features[0, 1], torch.tensor([1.5, 2.0]))
    assert mask[0].tolist() == [False, True, False, False, True, False]


def test_aggregate_word_pieces_gradient_is_shared_by_the_pieces() -> None:
    hidden = torch.randn(1, 5, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    word_mask = torch.tensor([[False, True, True, True, False]])
    word_start = torch.tensor([[-1, 1, 1, 1, -1]])
    features, mask = aggregate_word_pieces(hidden, word_mask, word_start)
    (features * mask[..., None]).sum().backward()
    expected = torch.zeros(1, 5, 3)
    expected[0, 1:4] = 1.0 / 3.0
    torch.testing.assert_close(hidden.grad, expected)


def test_aggregate_matches_a_plain_loop() -> None:
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(3, 9, 4, generator=generator, dtype=torch.float64)
    word_start = torch.tensor(
        [
            [-1, 1, 1, 3, 4, 4, 4, -1, -1],
            [-1, 1, 2, 3, -1, 5, 5, -1, -1],
            [-1, 1, 1, 1, 1, 1, 1, 1, -1],
        ]
    )
    word_mask = word_start >= 0
    features, mask = aggregate_word_pieces(hidden, word_mask, word_start)
    for b in range(3):
        starts = word_start[b].tolist()
        for j in range(9):
            pieces = [k for k in range(9) if starts[k] == j]
            if pieces:
                reference = sum(hidden[b, k] for k in pieces) / len(pieces)
                assert mask[b, j]
            else:
                reference = hidden[b, j]
                assert not mask[b, j]
            torch.testing.assert_close(features[b, j], reference)


def test_encoder_forward_with_word_start_averages_the_model_pieces() -> None:
    torch.manual_seed(0)
    encoder = HuggingFaceTextEncoder(config=TINY).eval()
    ids = torch.tensor([[2, 10, 11, 12, 13, 3, 0]])
    attention = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    word_mask = torch.tensor([[False, True, True, True, True, False, False]])
    word_start = torch.tensor([[-1, 1, 1, 1, 4, -1, -1]])
    with torch.no_grad():
        plain = encoder(ids, attention, word_mask)
        words = encoder(ids, attention, word_mask, word_start)
    torch.testing.assert_close(words.global_features, plain.global_features)
    torch.testing.assert_close(words.token_features[0, 1], plain.token_features[0, 1:4].mean(0))
    torch.testing.assert_close(words.token_features[0, 4], plain.token_features[0, 4])
    assert words.token_mask.tolist() == [[False, True, False, False, True, False, False]]
    assert torch.equal(plain.token_mask, word_mask)


def _saved_bert(folder: Path, **overrides) -> BertModel:
    torch.manual_seed(1)
    model = BertModel(BertConfig(**{**TINY, **overrides}), add_pooling_layer=False).eval()
    model.save_pretrained(folder)
    return model


def test_pretrained_weights_load_into_the_configured_model(tmp_path: Path) -> None:
    reference = _saved_bert(tmp_path / "bert")
    torch.manual_seed(2)  # another initialisation, overwritten by the folder's weights
    encoder = HuggingFaceTextEncoder(config=TINY, pretrained_weights=tmp_path / "bert").eval()
    scratch = HuggingFaceTextEncoder(config=TINY).eval()
    ids = torch.tensor([[2, 7, 8, 9, 3], [2, 11, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        out = encoder(ids, mask)
        other = scratch(ids, mask)
    torch.testing.assert_close(out.token_features, expected, rtol=0, atol=0)
    torch.testing.assert_close(out.global_features, expected[:, 0], rtol=0, atol=0)
    assert not torch.allclose(other.token_features, expected)
    for name, value in reference.state_dict().items():
        assert torch.equal(encoder.model.state_dict()[name], value), name
    assert encoder.model.pooler is None and encoder.out_channels == 16


@pytest.mark.parametrize(
    "overrides",
    [{"hidden_size": 8, "intermediate_size": 16}, {"vocab_size": 60}, {"max_position_embeddings": 16}],
)
def test_pretrained_weights_of_another_config_raise_naming_the_folder(tmp_path: Path, overrides: dict) -> None:
    folder = tmp_path / "other"
    _saved_bert(folder, **overrides)
    with pytest.raises(ValueError, match=re.escape(str(folder))):
        HuggingFaceTextEncoder(config=TINY, pretrained_weights=folder)


def test_pretrained_weights_with_missing_layers_raise(tmp_path: Path) -> None:
    folder = tmp_path / "one_layer"
    _saved_bert(folder)
    with pytest.raises(ValueError, match=re.escape(str(folder))):
        HuggingFaceTextEncoder(config={**TINY, "num_hidden_layers": 2}, pretrained_weights=folder)


def test_pretrained_weights_with_extra_layers_raise(tmp_path: Path) -> None:
    folder = tmp_path / "two_layers"
    _saved_bert(folder, num_hidden_layers=2)
    with pytest.raises(ValueError, match=re.escape(str(folder))):
        HuggingFaceTextEncoder(config=TINY, pretrained_weights=folder)


def test_pretrained_weights_need_config(tmp_path: Path) -> None:
    _saved_bert(tmp_path / "bert")
    with pytest.raises(ValueError, match="pretrained_weights"):
        HuggingFaceTextEncoder(tmp_path / "bert", pretrained_weights=tmp_path / "bert")


def test_frozen_copy_of_a_random_text_encoder_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from sista_monai.networks import SISTAModel, ViTImageEncoder

    image = ViTImageEncoder(img_size=32, patch_size=16, preset="tiny", num_layers=1)
    with caplog.at_level("WARNING", logger="sista_monai.networks.sista"):
        SISTAModel(image, HuggingFaceTextEncoder(config=TINY), embed_dim=8, keep_frozen_text_copy=True)
    assert "randomly initialised text encoder" in caplog.text
    caplog.clear()
    folder = tmp_path / "bert"
    _saved_bert(folder)
    with caplog.at_level("WARNING", logger="sista_monai.networks.sista"):
        SISTAModel(
            image,
            HuggingFaceTextEncoder(config=TINY, pretrained_weights=folder),
            embed_dim=8,
            keep_frozen_text_copy=True,
        )
        SISTAModel(image, HuggingFaceTextEncoder(config=TINY), embed_dim=8)  # no frozen copy: nothing to warn about
    assert "randomly initialised" not in caplog.text
