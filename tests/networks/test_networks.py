"""Encoders, heads and the SISTA model: shapes at demo and paper size, layouts, loading, freezing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from sista_monai.networks import (
    HuggingFaceTextEncoder,
    ProjectionHead,
    ResNetImageEncoder,
    SISTAModel,
    ViTImageEncoder,
    build_image_encoder,
)

SMALL_BERT = {
    "vocab_size": 120,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}


def _tokens(batch: int = 3, length: int = 12, vocab: int = 120) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    if batch > 1:
        mask[1, 7:] = 0
    return ids, mask


def test_tiny_vit_shapes_and_pooling() -> None:
    torch.manual_seed(0)
    encoder = ViTImageEncoder(img_size=64, patch_size=16, preset="tiny", pooling="mean")
    out = encoder(torch.rand(2, 1, 64, 64))
    assert out.global_features.shape == (2, 64) and out.patch_features.shape == (2, 16, 64)
    assert out.patch_grid == (4, 4) and out.hidden_states == ()
    torch.testing.assert_close(out.global_features, out.patch_features.mean(1))
    with pytest.raises(ValueError, match="expects inputs of spatial size"):
        encoder(torch.rand(1, 1, 32, 64))


def test_vit_patch_order_is_row_major_over_the_grid() -> None:
    """Patch k covers rows ``gx = k // gy`` and ``gy = k % gy`` of the (W, H) input, as documented."""
    torch.manual_seed(0)
    encoder = ViTImageEncoder(img_size=(32, 48), patch_size=8, preset="tiny", num_layers=0).eval()
    assert encoder.patch_grid == (4, 6)
    blank = torch.zeros(1, 1, 32, 48)
    marked = blank.clone()
    marked[0, 0, 2 * 8 : 3 * 8, 5 * 8 : 6 * 8] = 1.0  # patch at grid position (2, 5)
    with torch.no_grad():
        difference = (encoder(marked).patch_features - encoder(blank).patch_features).abs().sum(-1)[0]
    assert torch.nonzero(difference > 1e-6).flatten().tolist() == [2 * 6 + 5]


def test_paper_size_encoders_instantiate_with_the_right_shapes() -> None:
    vit = ViTImageEncoder(img_size=224, patch_size=16, preset="base")
    assert sum(p.numel() for p in vit.parameters()) > 85_000_000
    with torch.no_grad():
        out = vit(torch.rand(1, 1, 224, 224))
    assert out.patch_features.shape == (1, 196, 768) and out.global_features.shape == (1, 768)

    resnet = ResNetImageEncoder(depth=50, img_size=224)
    with torch.no_grad():
        out = resnet(torch.rand(1, 1, 224, 224))
    assert out.global_features.shape == (1, 2048) and out.patch_features.shape == (1, 49, 2048)
    assert out.patch_grid == (7, 7) == resnet.patch_grid

    bert = HuggingFaceTextEncoder(config={"vocab_size": 28996})  # Bio_ClinicalBERT's architecture
    ids, mask = _tokens(1, 112, 28996)
    with torch.no_grad():
        text = bert(ids, mask)
    assert text.token_features.shape == (1, 112, 768) and text.global_features.shape == (1, 768)


def test_resnet_patches_are_the_last_stage_cells() -> None:
    torch.manual_seed(0)
    encoder = ResNetImageEncoder(depth=18, img_size=96).eval()
    image = torch.rand(2, 1, 96, 64)
    with torch.no_grad():
        out = encoder(image)
        net = encoder.resnet
        stage = net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.act(net.bn1(net.conv1(image))))))))
    assert out.patch_grid == (3, 2)
    torch.testing.assert_close(out.patch_features[:, 1 * 2 + 1], stage[:, :, 1, 1])
    torch.testing.assert_close(out.global_features, stage.mean(dim=(2, 3)))
    torch.testing.assert_close(net(image), out.global_features)  # MONAI's own forward agrees


def test_encoder_config_round_trip() -> None:
    for encoder in (
        ViTImageEncoder(img_size=32, patch_size=8, preset="tiny"),
        ResNetImageEncoder(depth=10, img_size=64),
    ):
        rebuilt = build_image_encoder(encoder.config())
        rebuilt.load_state_dict(encoder.state_dict())  # same architecture: every key and shape matches
        assert rebuilt.config() == encoder.config()
    with pytest.raises(ValueError, match="unknown image encoder arch"):
        build_image_encoder({"arch": "swin"})


def test_text_encoder_from_local_folder_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    reference = BertModel(BertConfig(**SMALL_BERT), add_pooling_layer=False).eval()
    reference.save_pretrained(tmp_path / "bert")
    encoder = HuggingFaceTextEncoder(tmp_path / "bert", pooling="cls").eval()
    ids, mask = _tokens()
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        out = encoder(ids, mask)
    torch.testing.assert_close(out.token_features, expected)
    torch.testing.assert_close(out.global_features, expected[:, 0])
    # default word mask: attended tokens without the first ([CLS]) and last ([SEP])
    assert out.token_mask.sum(1).tolist() == [10, 5, 10]
    with pytest.raises(OSError):
        HuggingFaceTextEncoder("no-such-org/no-such-model")  # local_files_only: no download attempted


def test_text_encoder_mean_pooling_and_freezing() -> None:
    torch.manual_seed(0)
    encoder = HuggingFaceTextEncoder(config=SMALL_BERT, pooling="mean", freeze_layers=1)
    ids, mask = _tokens()
    out = encoder(ids, mask)
    expected = (out.token_features[1, :7]).mean(0)
    torch.testing.assert_close(out.global_features[1], expected)
    frozen = {n for n, p in encoder.named_parameters() if not p.requires_grad}
    assert any(n.startswith("model.embeddings") for n in frozen)
    assert any(".layer.0." in n for n in frozen) and not any(".layer.1." in n for n in frozen)
    assert encoder.model.pooler is None
    with pytest.raises(ValueError, match="has 2 layers"):
        HuggingFaceTextEncoder(config=SMALL_BERT, freeze_layers=3)
    with pytest.raises(ValueError, match="exactly one"):
        HuggingFaceTextEncoder()


def test_projection_head_is_normalised_and_per_sample() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(16, 8)
    x = torch.randn(5, 7, 16)
    out = head(x)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5, 7))
    torch.testing.assert_close(head(x[:1]), out[:1])


def test_sista_model_outputs_and_frozen_copy() -> None:
    torch.manual_seed(0)
    model = SISTAModel(
        ViTImageEncoder(img_size=32, patch_size=8, preset="tiny"),
        HuggingFaceTextEncoder(config=SMALL_BERT),
        embed_dim=16,
        keep_frozen_text_copy=True,
    )
    ids, mask = _tokens()
    word_mask = mask.bool().clone()
    word_mask[:, 0] = False
    out = model(torch.rand(3, 1, 32, 32), ids, mask, word_mask)
    assert out.image_emb.shape == (3, 16) and out.patch_emb.shape == (3, 16, 16)
    assert out.text_emb.shape == (3, 16) and out.token_emb.shape == (3, 12, 16)
    assert torch.equal(out.token_mask, word_mask) and out.patch_grid == (4, 4)
    assert out.frozen_text_features.shape == (3, 32) and not out.frozen_text_features.requires_grad

    before = {k: v.clone() for k, v in model.frozen_text_encoder.state_dict().items()}
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    (out.image_emb @ out.text_emb.T).sum().backward()
    optimiser.step()
    model.train()
    assert not model.frozen_text_encoder.training
    for key, value in model.frozen_text_encoder.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not torch.equal(
        model.text_encoder.state_dict()["model.embeddings.word_embeddings.weight"],
        before["model.embeddings.word_embeddings.weight"],
    )
