"""Segmentation networks on both encoders: shapes, TorchScript, a frozen encoder, option refusals."""

from __future__ import annotations

import pytest
import torch

from sista_monai.engines import encoder_parameter_groups
from sista_monai.networks import ResNetImageEncoder, ViTImageEncoder, ViTSegmentationNet, segmentation_network


def _vit(layers: int = 2) -> ViTImageEncoder:
    return ViTImageEncoder(
        img_size=32, patch_size=16, preset="tiny", hidden_size=16, mlp_dim=32, num_layers=layers, num_heads=2
    )


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_networks_shapes_torchscript_and_frozen_encoder(kind: str) -> None:
    torch.manual_seed(0)
    encoder = _vit() if kind == "vit" else ResNetImageEncoder(depth=10, img_size=32)
    reference = {k: v.clone() for k, v in encoder.state_dict().items()}
    network = segmentation_network(encoder, feature_size=4, norm_name="batch", decoder_channels=(32, 16, 8, 8, 4))
    prefix = "" if kind == "vit" else "unet.encoder."
    state = network.state_dict()
    for key, value in reference.items():  # the pretrained weights are the network's, under a fixed prefix
        assert torch.equal(state[prefix + key], value), key
    groups = encoder_parameter_groups(network, 1e-3, 1e-4, 0.0)
    assert [g["name"] for g in groups] == ["head"]  # frozen encoder: not in the optimiser
    network.train()
    assert not network.encoder.training
    image = torch.randn(2, 1, 32, 32)
    loss = network(image).mean()
    loss.backward()
    assert all(p.grad is None for p in network.encoder.parameters())
    network.eval()
    with torch.no_grad():
        eager = network(image)
        scripted = torch.jit.script(network)(image)
    assert eager.shape == (2, 1, 32, 32)
    torch.testing.assert_close(scripted, eager, rtol=0, atol=1e-5)
    assert float(torch.sigmoid(eager).mean()) < 0.2  # the output bias starts at the foreground prior


def test_vit_network_options_and_refusals() -> None:
    network = ViTSegmentationNet(_vit(3), freeze_encoder="false", output="probabilities", feature_size=4)
    assert (network.skip1, network.skip2, network.skip3) == (0, 0, 1)
    assert {g["name"] for g in encoder_parameter_groups(network, 1e-3, 1e-4, 0.0)} == {"head", "encoder"}
    with torch.no_grad():
        out = network.eval()(torch.randn(1, 1, 32, 32))
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    with pytest.raises(ValueError, match="16x16"):
        ViTSegmentationNet(
            ViTImageEncoder(
                img_size=32, patch_size=8, preset="tiny", hidden_size=16, mlp_dim=32, num_layers=1, num_heads=2
            )
        )
    with pytest.raises(ValueError, match="skip_blocks"):
        ViTSegmentationNet(_vit(2), skip_blocks=[0, 1, 5])
    with pytest.raises(ValueError, match="conv1_stride"):
        segmentation_network(ResNetImageEncoder(depth=10, img_size=32, conv1_stride=1))
    with pytest.raises(TypeError):
        segmentation_network(torch.nn.Conv2d(1, 1, 1))
