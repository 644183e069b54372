"""The final-weights fallback of the best-model saver."""

from __future__ import annotations

from pathlib import Path

import torch
from ignite.engine import Engine, Events

from sista_monai.handlers import BestModelSaver, FinalModelFallback


def _trainer_with_fallback(saver: BestModelSaver, network: torch.nn.Module, path: Path) -> Engine:
    engine = Engine(lambda e, b: None)
    FinalModelFallback(saver, network, path).attach(engine)
    return engine


def test_final_weights_are_saved_when_no_validation_saved_a_best_model(tmp_path: Path) -> None:
    network = torch.nn.Linear(3, 1)
    path = tmp_path / "model.pt"
    path.write_bytes(b"stale weights of an earlier run")
    saver = BestModelSaver(network, path)
    _trainer_with_fallback(saver, network, path).run([0], max_epochs=1)
    state = torch.load(path, weights_only=True)
    assert torch.equal(state["weight"], network.weight.detach())


def test_a_saved_best_model_is_kept(tmp_path: Path) -> None:
    network = torch.nn.Linear(3, 1)
    path = tmp_path / "model.pt"
    saver = BestModelSaver(network, path)
    evaluator = Engine(lambda e, b: None)
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update({"val_auroc": 0.7}))
    evaluator.state.key_metric_name = "val_auroc"
    saver.attach(evaluator)
    evaluator.run([0], max_epochs=1)
    best = torch.load(path, weights_only=True)
    with torch.no_grad():
        network.weight.add_(1.0)
    _trainer_with_fallback(saver, network, path).run([0], max_epochs=1)
    assert torch.equal(torch.load(path, weights_only=True)["weight"], best["weight"])


def test_non_finite_final_weights_never_replace_the_file(tmp_path: Path) -> None:
    import pytest

    from sista_monai.errors import NonFiniteWeightsError

    network = torch.nn.Linear(3, 1)
    with torch.no_grad():
        network.bias.fill_(float("nan"))
    path = tmp_path / "model.pt"
    path.write_bytes(b"the previous file")
    with pytest.raises(NonFiniteWeightsError, match="bias"):
        _trainer_with_fallback(BestModelSaver(network, path), network, path).run([0], max_epochs=1)
    assert path.read_bytes() == b"the previous file"
