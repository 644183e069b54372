"""The detection trainer: a non-finite loss stops training and names the iteration."""

from __future__ import annotations

import pytest
import torch

from sista_monai.networks import (
    ViTImageEncoder,
    build_detector,
    detection_network,
)

TINY_VIT = {
    "img_size": 64,
    "patch_size": 16,
    "preset": "tiny",
    "hidden_size": 32,
    "mlp_dim": 64,
    "num_layers": 1,
    "num_heads": 2,
}


def _vit() -> ViTImageEncoder:
    torch.manual_seed(0)
    return ViTImageEncoder(**TINY_VIT)


def test_trainer_stops_on_a_non_finite_loss_naming_the_iteration() -> None:
    from monai.data import DataLoader
    from monai.data.utils import no_collation

    from sista_monai.engines import DetectionTrainer
    from sista_monai.errors import NonFiniteLossError

    network = detection_network(_vit(), fpn_channels=16)
    detector = build_detector(network)
    good = {"image": torch.randn(1, 64, 64), "box": torch.tensor([[8.0, 8.0, 30.0, 40.0]]), "label": torch.tensor([0])}
    bad = {**good, "image": torch.full((1, 64, 64), float("nan"))}
    loader = DataLoader([good, good, bad, good], batch_size=2, collate_fn=no_collation)
    trainer = DetectionTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.SGD([p for p in network.parameters() if p.requires_grad], lr=1e-3),
        detector=detector,
    )
    before = {k: v.clone() for k, v in network.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match=r"iteration 2 \(epoch 1\)"):
        trainer.run()
    changed = [k for k, v in network.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all(torch.isfinite(v).all() for v in network.state_dict().values())  # the bad step was not taken
