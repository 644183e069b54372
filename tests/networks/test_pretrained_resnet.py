"""torchvision ImageNet ResNet weights in the project's MONAI ResNet encoder: a randomly initialised torchvision
model saved locally, loaded through ``ResNetImageEncoder(pretrained=file)``, gives torchvision's features on the same
radiograph, each library fed its own layout (torchvision the upright ``(H, W)`` image, MONAI its ``(W, H)`` array).
No download anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from sista_monai.networks import ResNetImageEncoder


def _torchvision_features(model: torch.nn.Module, upright: torch.Tensor) -> torch.Tensor:
    """The last stage's feature map of a torchvision ResNet, ``(B, C, h, w)``."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(upright))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Batch-norm statistics away from their defaults, so that a wrong key map cannot go unnoticed; ``conv1``'s
    filters on a 2^-12 grid, so that their sum over R, G and B is exact in float32 and the two models can be
    compared to round-off."""
    with torch.no_grad():
        model.conv1.weight.copy_(torch.round(model.conv1.weight * 4096) / 4096)
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
    return model.eval()


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_weights_give_torchvision_features_on_the_upright_image(depth: int, tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = _randomised(getattr(torchvision.models, f"resnet{depth}")(weights=None))
    weights = tmp_path / "imagenet.pth"
    torch.save(source.state_dict(), weights)
    encoder = ResNetImageEncoder(depth=depth, img_size=(96, 64), pretrained=weights).eval()
    # in double precision, so that the comparison tests the mapping, not float32 summation order through 50 layers
    source, encoder = source.double(), encoder.double()

    grey = torch.rand(2, 1, 64, 96, generator=torch.Generator().manual_seed(1), dtype=torch.float64)  # (B, 1, H, W)
    with torch.no_grad():
        expected = _torchvision_features(source, grey.expand(-1, 3, -1, -1))  # torchvision: RGB copies, (H, W)
        output = encoder(grey.transpose(-1, -2))  # MONAI's layout: (B, 1, W, H)
    torch.testing.assert_close(output.global_features, expected.mean(dim=(2, 3)), atol=1e-10, rtol=1e-10)
    # the patch cells are torchvision's cells of the upright image, in MONAI's (x, y) order
    h, w = expected.shape[2:]
    assert output.patch_grid == (w, h)
    cells = expected.transpose(-1, -2).flatten(2).transpose(1, 2)
    torch.testing.assert_close(output.patch_features, cells, atol=1e-10, rtol=1e-10)


def test_without_the_transposed_kernels_the_features_differ(tmp_path: Path) -> None:
    """The check above can fail: the same weights on the transposed image give other features."""
    torch.manual_seed(0)
    source = _randomised(torchvision.models.resnet18(weights=None))
    grey = torch.rand(1, 1, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        upright = _torchvision_features(source, grey.expand(-1, 3, -1, -1)).mean(dim=(2, 3))
        transposed = _torchvision_features(source, grey.transpose(-1, -2).expand(-1, 3, -1, -1)).mean(dim=(2, 3))
    assert (upright - transposed).abs().max() > 1e-3


def test_missing_or_mismatched_weights_say_what_and_how(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no weights file at .*absent\.pth; save torchvision's weights once"):
        ResNetImageEncoder(depth=50, pretrained=tmp_path / "absent.pth")
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(
        ValueError, match=r"r18\.pth: the weights do not fit the configured ResNet: missing \['layer1\.0\.bn3"
    ):
        ResNetImageEncoder(depth=50, pretrained=tmp_path / "r18.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"junk\.pth: (refused|not a loadable weights-only ImageNet weights)"):
        ResNetImageEncoder(depth=18, pretrained=tmp_path / "junk.pth")
    with pytest.raises(ValueError, match="neither a file nor a torchvision resnet18 weight"):
        ResNetImageEncoder(depth=18, pretrained="IMAGENET_V9")
    with pytest.raises(ValueError, match="conv1_stride=2"):
        ResNetImageEncoder(depth=18, conv1_stride=1, pretrained=tmp_path / "r18.pth")
    # the architecture recorded for the sidecar does not depend on the initialisation
    assert (
        ResNetImageEncoder(depth=18, pretrained=tmp_path / "r18.pth").config() == ResNetImageEncoder(depth=18).config()
    )


def test_a_weights_name_not_in_the_cache_is_refused_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))  # nothing cached; the test network is blocked
    with pytest.raises(FileNotFoundError, match="not in the torch hub cache and cannot be downloaded here"):
        ResNetImageEncoder(depth=18, pretrained="IMAGENET1K_V1")
