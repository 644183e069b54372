"""torchvision ImageNet ViT weights in the project's MONAI ViT encoder (compared in double precision to 1e-6: the
encoder keeps float32 parameters, so the [CLS] embedding sum and the resized positions are rounded once): a randomly initialised torchvision
``VisionTransformer`` saved locally, loaded through ``ViTImageEncoder(pretrained=file)``, gives torchvision's tokens
on the same radiograph, torchvision fed the upright ``(H, W)`` image and MONAI its ``(W, H)`` array; with another
input size, the position embeddings are resized as torchvision's own ``interpolate_embeddings`` resizes them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import VisionTransformer
from torchvision.models.vision_transformer import interpolate_embeddings

from sista_monai.networks import ViTImageEncoder

SIZE = {"num_layers": 2, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32}
ENCODER = {"preset": "tiny", "hidden_size": 16, "mlp_dim": 32, "num_layers": 2, "num_heads": 2, "patch_size": 16}


def _source(image_size: int) -> VisionTransformer:
    torch.manual_seed(0)
    model = VisionTransformer(image_size=image_size, patch_size=16, **SIZE)
    with torch.no_grad():  # RGB filters on a 2^-12 grid: their sum is exact, so the comparison is to round-off
        model.conv_proj.weight.copy_(torch.round(model.conv_proj.weight * 4096) / 4096)
        model.encoder.pos_embedding.normal_(std=0.5)  # far from zero, so that a wrong permutation shows
        model.class_token.normal_(std=0.5)
    return model.eval().float().double()  # float32 values, as the saved file holds them


def _tokens(model: VisionTransformer, upright: torch.Tensor) -> torch.Tensor:
    x = model._process_input(upright.expand(-1, 3, -1, -1))
    x = torch.cat([model.class_token.expand(x.shape[0], -1, -1), x], dim=1)
    return model.encoder(x)  # (B, 1 + h*w, D), row-major over (h, w)


def _as_monai(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Patch tokens from torchvision's (h, w) row-major order to MONAI's (w, h) one."""
    patches = tokens[:, 1:].reshape(tokens.shape[0], height, width, -1).transpose(1, 2)
    return patches.reshape(tokens.shape[0], height * width, -1)


def test_torchvision_vit_weights_give_torchvision_tokens(tmp_path: Path) -> None:
    source = _source(48)  # a 3x3 grid: a wrong order of the patch tokens or their positions shows
    torch.save({k: v.float() for k, v in source.state_dict().items()}, tmp_path / "vit.pth")
    encoder = ViTImageEncoder(img_size=48, pretrained=tmp_path / "vit.pth", **ENCODER).eval().double()
    assert encoder.config()["layer_norm_eps"] == 1e-6
    upright = torch.rand(2, 1, 48, 48, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    upright[:, :, :16] += 1.0  # a bright top row of patches: the image is not symmetric under transposition
    with torch.no_grad():
        expected = _tokens(source, upright)
        output = encoder(upright.transpose(-1, -2))
    torch.testing.assert_close(output.global_features, expected[:, 0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(output.patch_features, _as_monai(expected, 3, 3), atol=1e-6, rtol=1e-6)


def test_resized_square_grid_matches_torchvision_interpolation(tmp_path: Path) -> None:
    source = _source(32)  # a 2x2 grid of weights, used at 64x64: 4x4
    torch.save({k: v.float() for k, v in source.state_dict().items()}, tmp_path / "vit.pth")
    encoder = ViTImageEncoder(img_size=64, pretrained=tmp_path / "vit.pth", **ENCODER).eval().double()
    state = interpolate_embeddings(64, 16, dict(source.state_dict()), interpolation_mode="bicubic")
    reference = VisionTransformer(image_size=64, patch_size=16, **SIZE).double().eval()
    reference.load_state_dict(state)
    upright = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        expected = _tokens(reference, upright)
        output = encoder(upright.transpose(-1, -2))
    torch.testing.assert_close(output.global_features, expected[:, 0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(output.patch_features, _as_monai(expected, 4, 4), atol=1e-6, rtol=1e-6)


def test_mismatched_vit_weights_are_refused(tmp_path: Path) -> None:
    torch.save(
        VisionTransformer(image_size=32, patch_size=16, **{**SIZE, "hidden_dim": 24}).state_dict(), tmp_path / "w.pth"
    )
    with pytest.raises(ValueError, match=r"w\.pth: the weights do not fit the configured ViT: .*shapes"):
        ViTImageEncoder(img_size=32, pretrained=tmp_path / "w.pth", **ENCODER)
    with pytest.raises(FileNotFoundError, match="no weights file at"):
        ViTImageEncoder(img_size=32, pretrained=tmp_path / "absent.pth", **ENCODER)
    # without weights the architecture (and so the sidecar) is unchanged from before
    assert "layer_norm_eps" not in ViTImageEncoder(img_size=32, **ENCODER).config()


def test_hugging_face_vit_folder_gives_its_own_outputs(tmp_path: Path) -> None:
    """A randomly initialised ``transformers`` ViTModel saved to a folder and loaded through the project gives the
    model's own last hidden state, the model fed the upright RGB image and the encoder MONAI's (W, H) array."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, image_size=48, patch_size=16
    )
    model = ViTModel(config, add_pooling_layer=False)
    with torch.no_grad():
        projection = model.embeddings.patch_embeddings.projection
        projection.weight.copy_(torch.round(projection.weight * 4096) / 4096)
        model.embeddings.position_embeddings.normal_(std=0.5)
        model.embeddings.cls_token.normal_(std=0.5)
    model.save_pretrained(tmp_path / "hf_vit")
    model = model.eval().double()
    encoder = ViTImageEncoder(img_size=48, pretrained=tmp_path / "hf_vit", **ENCODER).eval().double()
    assert encoder.config()["layer_norm_eps"] == 1e-12  # the Hugging Face config's
    upright = torch.rand(2, 1, 48, 48, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    upright[:, :, :16] += 1.0
    with torch.no_grad():
        expected = model(pixel_values=upright.expand(-1, 3, -1, -1)).last_hidden_state
        output = encoder(upright.transpose(-1, -2))
    torch.testing.assert_close(output.global_features, expected[:, 0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(output.patch_features, _as_monai(expected, 3, 3), atol=1e-6, rtol=1e-6)
    with pytest.raises(FileNotFoundError, match="no Hugging Face ViT there or in the local cache"):
        ViTImageEncoder(img_size=48, pretrained="someone/not-cached-vit", **ENCODER)
