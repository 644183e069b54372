"""The arithmetic of :class:`~sista_monai.engines.SafeStep` in one process, against plain PyTorch by hand.

Each case trains a linear layer with :class:`~sista_monai.engines.SafeSupervisedTrainer` (mean squared error, SGD
without momentum) and repeats the same steps by hand: ``p -= lr * grad`` with the gradient of the mean loss over
the concatenated micro-batches of a window. The ranks' agreement on a non-finite loss is in ``test_safe_step.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from sista_monai.engines import SafeStep, SafeSupervisedTrainer

LR = 0.1
GAMMA = 0.5
"""The scheduler halves the learning rate at every optimiser step, so a step counted twice shows in the weights."""
BATCH = 2
Batch = tuple[torch.Tensor, torch.Tensor]
STEP_LOGGER = "sista_monai.engines.step"


def _batches(count: int, nan: Sequence[int] = ()) -> list[Batch]:
    generator = torch.Generator().manual_seed(7)
    batches = []
    for index in range(count):
        x = torch.randn(BATCH, 3, generator=generator) * 3
        y = torch.randn(BATCH, 1, generator=generator) * 3 + 5
        batches.append((torch.full_like(x, float("nan")) if index in nan else x, y))
    return batches


def _model() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(3, 1)


def _train(
    batches: Sequence[Batch], trainer_class: type[SafeSupervisedTrainer] = SafeSupervisedTrainer, **kwargs: Any
) -> tuple[torch.nn.Linear, SafeSupervisedTrainer, torch.optim.lr_scheduler.StepLR]:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=GAMMA)
    items = [{"image": x[i], "label": y[i]} for x, y in batches for i in range(BATCH)]
    trainer = trainer_class(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=DataLoader(items, batch_size=BATCH),
        network=model,
        optimizer=optimizer,
        loss_function=torch.nn.MSELoss(),
        scheduler=scheduler,
        **kwargs,
    )
    trainer.run()
    return model, trainer, scheduler


def _window_gradient(model: torch.nn.Linear, window: Sequence[Batch]) -> list[torch.Tensor]:
    """The gradient of the mean loss over the window's micro-batches, concatenated into one batch."""
    x = torch.cat([b[0] for b in window])
    y = torch.cat([b[1] for b in window])
    model.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def _by_hand(windows: Sequence[Sequence[Batch]], clip: float | None = None) -> torch.nn.Linear:
    """One plain SGD step per window, the learning rate multiplied by ``GAMMA`` after each step."""
    model = _model()
    lr = LR
    for window in windows:
        gradient = _window_gradient(model, window)
        if clip is not None:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in gradient]))
            gradient = [g * min(1.0, clip / float(norm)) for g in gradient]
        with torch.no_grad():
            for p, g in zip(model.parameters(), gradient, strict=True):
                p -= lr * g
        lr *= GAMMA
    return model


def _step_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == STEP_LOGGER]


def _assert_same_weights(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_accumulation_steps_once_per_window_with_the_mean_gradient_of_its_concatenation() -> None:
    batches = _batches(6)
    model, trainer, scheduler = _train(batches, accumulation_steps=3)
    _assert_same_weights(model, _by_hand([batches[:3], batches[3:]]))
    assert scheduler.last_epoch == 2  # once per optimiser step, not per micro-batch (6)
    # a step per micro-batch would not meet the reference
    assert not torch.allclose(model.weight, _by_hand([[b] for b in batches]).weight, atol=1e-4)
    assert trainer.state.skipped_iterations == 0


def test_without_accumulation_every_batch_steps_and_schedules() -> None:
    batches = _batches(3)
    model, _, scheduler = _train(batches)
    _assert_same_weights(model, _by_hand([[b] for b in batches]))
    assert scheduler.last_epoch == 3


def test_a_skipped_batch_takes_no_step_and_no_scheduler_step(caplog: pytest.LogCaptureFixture) -> None:
    batches = _batches(3, nan=[1])
    with caplog.at_level(logging.WARNING, logger=STEP_LOGGER):
        model, trainer, scheduler = _train(batches, nonfinite_loss="skip")
    _assert_same_weights(model, _by_hand([[batches[0]], [batches[2]]]))  # the 2nd good step at the 2nd rate
    assert scheduler.last_epoch == 2 and trainer.state.skipped_iterations == 1
    messages = _step_messages(caplog)
    assert [m.split(": ")[0] for m in messages] == ["non-finite loss at iteration 2 (epoch 1)"]
    assert messages[0].endswith("; batch skipped")


class _RecordingScaler(torch.amp.GradScaler):
    """The real CPU gradient scaler, recording the order of its calls in ``calls``."""

    def __init__(self, calls: list[str]) -> None:
        super().__init__("cpu", init_scale=2.0**12)
        self.calls = calls

    def scale(self, outputs: Any) -> Any:
        self.calls.append("scale")
        return super().scale(outputs)

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        self.calls.append("unscale_")
        super().unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("step")
        return super().step(optimizer, *args, **kwargs)

    def update(self, new_scale: Any = None) -> None:
        self.calls.append("update")
        super().update(new_scale)


class _ScaledTrainer(SafeSupervisedTrainer):
    """The trainer on the scaler path on the CPU (``_scaler`` picks MONAI's scaler for float16 on CUDA only)."""

    recording_scaler: _RecordingScaler

    def _scaler(self, engine: Any) -> _RecordingScaler:
        return self.recording_scaler


def test_the_scaler_path_clips_unscaled_gradients_once_per_optimiser_step(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    norms: list[tuple[float, float]] = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(parameters: Any, max_norm: float, *args: Any, **kwargs: Any) -> torch.Tensor:
        parameters = list(parameters)
        before = clip(parameters, max_norm, *args, **kwargs)
        after = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in parameters]))
        calls.append("clip")
        norms.append((float(before), float(after)))
        return before

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)

    class Trainer(_ScaledTrainer):
        recording_scaler = _RecordingScaler(calls)

    batches = _batches(4)
    clip_norm = 0.5
    model, _, scheduler = _train(batches, Trainer, accumulation_steps=2, grad_clip_norm=clip_norm)

    assert calls == ["scale", "scale", "unscale_", "clip", "step", "update"] * 2
    assert scheduler.last_epoch == 2
    reference = _by_hand([batches[:2], batches[2:]], clip=clip_norm)
    _assert_same_weights(model, reference)
    # the clip saw the unscaled window gradient (not 2 ** 12 times it) and left exactly grad_clip_norm
    unscaled = torch.linalg.vector_norm(torch.cat([g.flatten() for g in _window_gradient(_model(), batches[:2])]))
    assert norms[0][0] == pytest.approx(float(unscaled), rel=1e-5) and norms[0][0] > clip_norm
    assert [after for _, after in norms] == pytest.approx([clip_norm] * 2, rel=1e-5)
    assert Trainer.recording_scaler.get_scale() == 2.0**12  # no overflow: every step was taken


def test_the_scaler_is_used_for_float16_autocast_on_cuda_only() -> None:
    scaler = object()

    def engine(amp: bool, device: str, **amp_kwargs: Any) -> Any:
        state = SimpleNamespace(device=torch.device(device))
        return SimpleNamespace(amp=amp, amp_kwargs=amp_kwargs, scaler=scaler, state=state)

    step = SafeStep()
    assert step._scaler(engine(True, "cuda")) is scaler  # float16 is autocast's CUDA default
    assert step._scaler(engine(True, "cuda", dtype=torch.float16)) is scaler
    assert step._scaler(engine(True, "cuda", dtype=torch.bfloat16)) is None
    assert step._scaler(engine(True, "cpu", dtype=torch.float16)) is None
    assert step._scaler(engine(False, "cuda")) is None


def test_a_skipped_micro_batch_drops_only_its_own_contribution(caplog: pytest.LogCaptureFixture) -> None:
    """The window's other micro-batches are kept and averaged; a bad last micro-batch still ends in a step."""
    batches = _batches(6, nan=[1, 5])
    with caplog.at_level(logging.WARNING, logger=STEP_LOGGER):
        model, trainer, scheduler = _train(batches, accumulation_steps=3, nonfinite_loss="skip")
    _assert_same_weights(model, _by_hand([[batches[0], batches[2]], [batches[3], batches[4]]]))
    assert scheduler.last_epoch == 2 and trainer.state.skipped_iterations == 2
    messages = _step_messages(caplog)
    assert [m.split(": ")[0] for m in messages] == [
        "non-finite loss at iteration 2 (epoch 1)",
        "non-finite loss at iteration 6 (epoch 1)",
    ]
    assert "batch skipped (micro-batch 2 of its accumulation window;" in messages[0]
    assert "batch skipped (micro-batch 3 of its accumulation window;" in messages[1]
    assert all("finite micro-batches are kept" in m for m in messages)


def test_a_window_of_skipped_micro_batches_takes_no_step(caplog: pytest.LogCaptureFixture) -> None:
    batches = _batches(4, nan=[0, 1])
    with caplog.at_level(logging.WARNING, logger=STEP_LOGGER):
        model, trainer, scheduler = _train(batches, accumulation_steps=2, nonfinite_loss="skip")
    _assert_same_weights(model, _by_hand([batches[2:]]))  # the first rate: the empty window did not schedule
    assert scheduler.last_epoch == 1 and trainer.state.skipped_iterations == 2
    assert torch.isfinite(model.weight).all()
    messages = _step_messages(caplog)
    assert len(messages) == 2 and "no optimiser step and no scheduler step" in messages[1]
