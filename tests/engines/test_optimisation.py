"""Optimiser parameter groups: a linear probe trains the head only; fine-tuning gives the encoder its own rate."""

from __future__ import annotations

from collections.abc import Callable

import torch

from sista_monai.engines import encoder_parameter_groups
from sista_monai.networks import ChestXrayClassifier, ViTImageEncoder


def test_linear_probe_optimises_the_head_only(tiny_vit: Callable[..., ViTImageEncoder]) -> None:
    network = ChestXrayClassifier(tiny_vit(), freeze_encoder=True)
    groups = encoder_parameter_groups(network, learning_rate=0.01, encoder_learning_rate=1e-4, weight_decay=1e-6)
    assert [g["name"] for g in groups] == ["head"]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in network.head.parameters()}
    assert not any(p.requires_grad for p in network.encoder.parameters())


def test_fine_tuning_gives_the_encoder_its_own_learning_rate(tiny_vit: Callable[..., ViTImageEncoder]) -> None:
    network = ChestXrayClassifier(tiny_vit(), freeze_encoder=False)
    wrapper = torch.nn.Module()
    wrapper.module = network  # the attribute DistributedDataParallel wraps the network under
    groups = encoder_parameter_groups(wrapper, 0.01, 1e-4)
    by_name = {g["name"]: g for g in groups}
    assert by_name["head"]["lr"] == 0.01 and by_name["encoder"]["lr"] == 1e-4
    trainable = {id(p) for p in network.parameters() if p.requires_grad}
    assert {id(p) for g in groups for p in g["params"]} == trainable
    optimizer = torch.optim.AdamW(groups, lr=0.01)
    assert [g["lr"] for g in optimizer.param_groups] == [0.01, 1e-4]


def test_fine_tuning_spelled_false_on_the_command_line(tiny_vit: Callable[..., ViTImageEncoder]) -> None:
    network = ChestXrayClassifier(tiny_vit(), freeze_encoder="false")  # `--freeze_encoder false` arrives as a string
    assert not network.freeze_encoder and all(p.requires_grad for p in network.head.parameters())
    assert any(p.requires_grad for p in network.encoder.parameters())
