"""The learnable SIA temperature lives in the SISTA model: its clamp, its place among the parameters, and one SGD step
equal to the CLIP formula (what the loss-held parameter gave before the move)."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import TINY_BERT
from torch.nn import functional as F

from sista_monai.losses import ReportSimilarity, SemanticInstanceAlignmentLoss, SISTALoss
from sista_monai.networks import HuggingFaceTextEncoder, LearnableTemperature, SISTAModel, ViTImageEncoder


def _model(**kwargs: object) -> SISTAModel:
    torch.manual_seed(0)
    encoder = ViTImageEncoder(img_size=16, patch_size=8, preset="tiny", num_layers=1)
    return SISTAModel(encoder, HuggingFaceTextEncoder(config=TINY_BERT), embed_dim=8, **kwargs)  # type: ignore[arg-type]


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 40, (4, 10), generator=generator)
    return torch.randn(4, 1, 16, 16, generator=generator), ids, torch.ones(4, 10, dtype=torch.long)


def test_learnable_temperature_is_clamped() -> None:
    module = LearnableTemperature(0.07, (0.05, 0.5))
    assert module().item() == pytest.approx(0.07)
    with torch.no_grad():
        module.log_temperature.fill_(math.log(0.001))
    assert module().item() == pytest.approx(0.05)
    with torch.no_grad():
        module.log_temperature.fill_(math.log(10.0))
    tau = module()
    assert tau.item() == pytest.approx(0.5)
    tau.backward()
    assert module.log_temperature.grad.item() == 0.0  # clamped: no gradient pushes it further out
    with pytest.raises(ValueError, match="outside temperature_bounds"):
        LearnableTemperature(2.0)
    with pytest.raises(ValueError, match="0 < min <= max"):
        LearnableTemperature(0.07, (0.0, 1.0))


def test_model_holds_the_temperature_last_and_returns_it() -> None:
    fixed = _model()
    assert fixed.temperature is None and fixed(*_batch()).temperature is None
    assert not any("temperature" in name for name, _ in fixed.named_parameters())

    model = _model(learnable_temperature=True, temperature=0.1, keep_frozen_text_copy=True)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    # the last trainable parameter, where the optimiser of a checkpoint from the loss-held days had it
    assert trainable[-1] == "temperature.log_temperature"
    assert "temperature.log_temperature" in model.state_dict()
    out = model(*_batch())
    assert out.temperature.item() == pytest.approx(0.1) and out.temperature.requires_grad
    with pytest.raises(ValueError, match="outside temperature_bounds"):
        _model(learnable_temperature=True, temperature=2.0)


def test_one_sgd_step_matches_the_clip_formula() -> None:
    """One SGD step of (model, SIA loss with tau from the model): loss and updated log(tau) from the formula."""
    model = _model(learnable_temperature=True, temperature=0.07)
    loss = SISTALoss(sia=SemanticInstanceAlignmentLoss(threshold=2.0, temperature=0.5), lambda_token=0.0)
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    out = model(*_batch())
    v, t = out.image_emb.detach().double(), out.text_emb.detach().double()
    report_sim = ReportSimilarity("text_online")(out.text_emb)
    terms = loss(image_emb=out.image_emb, text_emb=out.text_emb, report_sim=report_sim, temperature=out.temperature)
    terms["loss"].backward()
    optimiser.step()

    # threshold 2 flags nothing: the symmetric CLIP loss at tau = 0.07, whatever the loss's own fixed temperature
    tau = 0.07
    logits = v @ t.T / tau
    targets = torch.arange(4)
    expected_loss = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
    assert terms["loss"].item() == pytest.approx(expected_loss.item(), rel=1e-5)
    assert terms["temperature"].item() == pytest.approx(tau)
    # dL/dlog(tau) = tau * dL/dtau = mean over the 2B anchors of (s_pos - E_softmax[s]) / tau, s = <v, t>
    s = v @ t.T
    rows = (s.diagonal() - (torch.softmax(logits, dim=1) * s).sum(dim=1)) / tau
    cols = (s.diagonal() - (torch.softmax(logits.T, dim=1) * s.T).sum(dim=1)) / tau
    gradient = 0.5 * (rows.mean() + cols.mean())
    updated = math.log(tau) - 0.1 * gradient.item()
    assert model.temperature.log_temperature.item() == pytest.approx(updated, rel=1e-5)
