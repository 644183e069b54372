"""The image-only classifier: same features as the encoder, TorchScript equality, a frozen encoder stays frozen."""

from __future__ import annotations

import pytest
import torch

from sista_monai.networks import ChestXrayClassifier, GlobalImageFeatures, ResNetImageEncoder, ViTImageEncoder

ENCODERS = {
    "vit_cls": lambda: ViTImageEncoder(
        img_size=32, patch_size=16, preset="tiny", hidden_size=16, mlp_dim=32, num_layers=2, num_heads=2
    ),
    "vit_mean": lambda: ViTImageEncoder(
        img_size=32, patch_size=16, preset="tiny", hidden_size=16, mlp_dim=32, num_layers=1, num_heads=2, pooling="mean"
    ),
    "resnet10": lambda: ResNetImageEncoder(depth=10, img_size=32),
}


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_global_features_equal_the_encoders(name: str) -> None:
    torch.manual_seed(0)
    encoder = ENCODERS[name]().eval()
    image = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        expected = encoder(image).global_features
        features = GlobalImageFeatures(encoder)(image)
    assert torch.equal(features, expected)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_state_dict_keeps_the_encoder_layout(name: str) -> None:
    encoder = ENCODERS[name]()
    network = ChestXrayClassifier(encoder)
    keys = set(network.state_dict())
    assert {f"encoder.{k}" for k in encoder.state_dict()} | {"head.weight", "head.bias"} == keys


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_torchscript_equals_eager(name: str) -> None:
    torch.manual_seed(1)
    network = ChestXrayClassifier(ENCODERS[name](), output="probabilities").eval()
    scripted = torch.jit.script(network)
    image = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        eager, traced = network(image), scripted(image)
    assert eager.shape == (4, 1)
    assert torch.allclose(eager, traced, atol=1e-5, rtol=0)
    assert ((eager >= 0) & (eager <= 1)).all()


def test_probabilities_are_the_sigmoid_of_the_logits() -> None:
    torch.manual_seed(2)
    encoder = ENCODERS["vit_cls"]()
    logits_net = ChestXrayClassifier(encoder, output="logits").eval()
    probability_net = ChestXrayClassifier(encoder, output="probabilities").eval()
    probability_net.load_state_dict(logits_net.state_dict())
    image = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(torch.sigmoid(logits_net(image)), probability_net(image))


def test_frozen_encoder_stays_in_eval_mode_and_gets_no_gradient() -> None:
    torch.manual_seed(3)
    network = ChestXrayClassifier(ENCODERS["resnet10"](), freeze_encoder=True)
    network.train()
    assert network.training and network.head.training and not network.encoder.training
    assert not any(m.training for m in network.encoder.modules())
    running_mean = network.encoder.resnet.bn1.running_mean.clone()
    loss = network(torch.rand(4, 1, 32, 32)).sum()
    loss.backward()
    assert torch.equal(network.encoder.resnet.bn1.running_mean, running_mean)  # batch-norm statistics untouched
    assert all(p.grad is None for p in network.encoder.parameters())
    assert network.head.weight.grad is not None


def test_fine_tuning_trains_the_encoder() -> None:
    network = ChestXrayClassifier(ENCODERS["vit_cls"](), freeze_encoder=False).train()
    assert network.encoder.training
    network(torch.rand(2, 1, 32, 32)).sum().backward()
    assert network.encoder.vit.patch_embedding.patch_embeddings.weight.grad is not None


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="output must be one of"):
        ChestXrayClassifier(ENCODERS["vit_cls"](), output="softmax")
    with pytest.raises(TypeError, match="unsupported image encoder"):
        GlobalImageFeatures(torch.nn.Linear(2, 2))
