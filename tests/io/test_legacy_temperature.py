"""Checkpoints written when the SIA loss held the learnable temperature load into a model that holds it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tiny_models import TINY_BERT

from sista_monai.handlers import load_checkpoint
from sista_monai.io import load_network_weights, move_loss_temperature
from sista_monai.networks import HuggingFaceTextEncoder, SISTAModel, ViTImageEncoder


def _model(learnable: bool) -> SISTAModel:
    torch.manual_seed(0)
    encoder = ViTImageEncoder(img_size=16, patch_size=8, preset="tiny", num_layers=1)
    return SISTAModel(encoder, HuggingFaceTextEncoder(config=TINY_BERT), embed_dim=8, learnable_temperature=learnable)


def _legacy_checkpoint() -> dict:
    """As train.json wrote it before the move: the network without the temperature, the loss with it, and an AdamW
    over the network's trainable parameters followed by the loss's."""
    network = _model(learnable=False)
    log_temperature = torch.nn.Parameter(torch.tensor(math.log(0.2)))
    params = [p for p in network.parameters() if p.requires_grad] + [log_temperature]
    optimiser = torch.optim.AdamW(params, lr=0.01)
    sum(p.sum() for p in params).backward()
    optimiser.step()
    return {
        "network": network.state_dict(),
        "optimizer": optimiser.state_dict(),
        "loss": {"log_temperature": log_temperature.detach().clone()},
    }


def test_move_loss_temperature() -> None:
    legacy = _legacy_checkpoint()
    moved = move_loss_temperature(legacy)
    assert "loss" not in moved and "loss" in legacy  # a new mapping; the input is left as it was
    assert torch.equal(moved["network"]["temperature.log_temperature"], legacy["loss"]["log_temperature"])
    assert move_loss_temperature(moved) is moved
    fixed = {"network": {"a": torch.zeros(1)}, "loss": {}}
    assert move_loss_temperature(fixed) is fixed


def test_a_legacy_checkpoint_resumes_and_loads(tmp_path: Path) -> None:
    legacy = _legacy_checkpoint()
    path = tmp_path / "checkpoint_1.pt"
    torch.save(legacy, path)

    model = _model(learnable=True)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)
    load_checkpoint(path, {"network": model, "optimizer": optimiser})
    assert model.temperature.log_temperature.item() == pytest.approx(legacy["loss"]["log_temperature"].item())
    # the optimiser state of the temperature is the last one, as the parameter is the model's last
    last = optimiser.state[model.temperature.log_temperature]
    legacy_state = legacy["optimizer"]["state"][len(legacy["optimizer"]["param_groups"][0]["params"]) - 1]
    torch.testing.assert_close(last["exp_avg"], legacy_state["exp_avg"])

    evaluated = load_network_weights(path, _model(learnable=True))
    assert torch.equal(evaluated.temperature.log_temperature.detach(), legacy["loss"]["log_temperature"])
    assert legacy["loss"]["log_temperature"].item() != pytest.approx(math.log(0.2))  # it was trained
    with pytest.raises(ValueError, match="trained with a learnable SIA temperature"):
        load_network_weights(path, _model(learnable=False))
