"""The training console handler: one line per epoch with the epoch means, per-iteration lines only on request."""

from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import from_engine

from sista_monai.handlers import EpochSummaryStatsHandler, loss_terms
from sista_monai.handlers.console import epoch_summary

ROOT = Path(__file__).parents[2]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _run(handler: EpochSummaryStatsHandler, outputs: list[dict], epochs: int = 2) -> list[str]:
    """Run an engine whose iteration ``i`` of every epoch returns ``outputs[i]``; the handler's messages."""
    engine = Engine(lambda e, batch: outputs[(e.state.iteration - 1) % len(outputs)])
    records = _Records()
    handler.attach(engine)
    handler.logger.addHandler(records)
    try:
        engine.run(range(len(outputs)), max_epochs=epochs)
    finally:
        handler.logger.removeHandler(records)
    return records.messages


def test_one_line_per_epoch_with_the_means_and_no_iteration_lines() -> None:
    outputs = [
        {"loss": torch.tensor(2.0), "loss_sia": torch.tensor(1.0), "loss_sta": torch.tensor(1.0), "lr": 0.1},
        {"loss": torch.tensor(4.0), "loss_sia": torch.tensor(3.0), "loss_sta": torch.tensor(1.0), "lr": 0.2},
    ]
    handler = EpochSummaryStatsHandler(name="test.console.means", output_transform=loss_terms)
    messages = _run(handler, outputs)
    assert len(messages) == 3  # two epochs, then the end of the run
    assert messages[0].startswith("Epoch: 1/2, 2 iterations -- loss: 3.0000 loss_sia: 2.0000 loss_sta: 1.0000")
    assert "lr: 0.2000" in messages[0]  # the last learning rate, not the mean
    assert messages[1].startswith("Epoch: 2/2, 2 iterations -- ")
    assert messages[2].startswith("Finished at epoch 2/2")
    assert not any("Iter:" in m for m in messages)


def test_iteration_log_brings_back_monai_per_iteration_lines() -> None:
    handler = EpochSummaryStatsHandler(
        iteration_log=True,
        name="test.console.iterations",
        tag_name="train_loss",
        output_transform=from_engine(["loss"], first=True),
    )
    messages = _run(handler, [[{"loss": torch.tensor(1.0)}]] * 3, epochs=1)
    assert [m.split(" --")[0] for m in messages if "Iter:" in m] == [f"Epoch: 1/1, Iter: {i}/3" for i in (1, 2, 3)]
    assert "Epoch: 1/1, 3 iterations -- train_loss: 1.0000" in messages[-2]


def test_scalar_outputs_are_named_by_tag_name_and_nan_shows() -> None:
    handler = EpochSummaryStatsHandler(
        name="test.console.scalar", tag_name="train_loss", output_transform=lambda out: out["loss"]
    )
    messages = _run(handler, [{"loss": torch.tensor(1.0)}, {"loss": torch.tensor(float("nan"))}], epochs=1)
    assert "train_loss: nan" in messages[0]
    assert handler.summary()["train_loss"] != handler.summary()["train_loss"]


def test_epoch_log_false_is_silent() -> None:
    handler = EpochSummaryStatsHandler(name="test.console.silent", epoch_log=False, output_transform=lambda o: o)
    assert _run(handler, [{"loss": 1.0}]) == []


@pytest.mark.parametrize("seconds", [None, 9.94])
def test_epoch_summary_format(seconds: float | None) -> None:
    line = epoch_summary(3, 30, 26, {"loss": 1.23456, "lr": 5e-5, "flag_precision": float("nan")}, seconds)
    assert line.startswith("Epoch: 3/30, 26 iterations -- loss: 1.2346 lr: 5.00e-05 flag_precision: nan")
    assert line.endswith("(9.9 s)") == (seconds is not None and math.isfinite(seconds))


def test_a_resumed_run_says_where_it_resumes() -> None:
    handler = EpochSummaryStatsHandler(name="test.console.resume", output_transform=lambda o: o)
    engine = Engine(lambda e, batch: {"loss": 1.0})
    records = _Records()
    handler.attach(engine)
    handler.logger.addHandler(records)
    try:
        engine.load_state_dict({"iteration": 2, "max_epochs": 3, "epoch_length": 2})
        engine.run(range(2))
    finally:
        handler.logger.removeHandler(records)
    assert records.messages[0] == "resuming from iteration 2, epoch 1 of 3"
    assert [m.split(",")[0] for m in records.messages[1:3]] == ["Epoch: 2/3", "Epoch: 3/3"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


BUNDLES = sorted(p.parent.parent.name for p in (ROOT / "bundles").glob("*/configs/train.json"))


@pytest.mark.parametrize("bundle", BUNDLES)
@pytest.mark.parametrize(("stream", "drawn"), [(io.StringIO, False), (_Terminal, True)])
def test_the_bundles_progress_bar_is_drawn_on_a_terminal_only(bundle: str, stream: type, drawn: bool) -> None:
    """Through a pipe or into a file tqdm's redraws would become lines: the bundles' ``ProgressBar`` is configured
    with tqdm's ``disable=None`` (off where the stream is not a terminal); the epoch line remains."""
    from ignite.handlers import ProgressBar

    config = json.loads((ROOT / "bundles" / bundle / "configs" / "train.json").read_text())
    (settings,) = [h for h in config["train"]["handlers"] if h.get("_target_") == "ignite.handlers.ProgressBar"]
    kwargs = {k: v for k, v in settings.items() if k != "_target_"}
    assert kwargs == {"persist": False, "disable": None}
    out = stream()
    engine = Engine(lambda engine, batch: batch)
    ProgressBar(**kwargs, file=out).attach(engine)
    engine.run([0.0] * 5, max_epochs=2)
    assert (len(out.getvalue()) > 0) is drawn


def test_the_epoch_means_are_the_trainer_metrics_of_that_epoch_only() -> None:
    """What experiment trackers log at each epoch (``engine.state.metrics``): the epoch's means, gone at the next
    epoch's start so that StatsHandler never prints them as metrics of the following epoch."""
    outputs = iter([{"loss": 1.0}, {"loss": 3.0}, {"loss": 5.0}, {"loss": 7.0}])
    engine = Engine(lambda engine, batch: next(outputs))
    handler = EpochSummaryStatsHandler(output_transform=loss_terms, name="epoch_metrics_test")
    handler.attach(engine)
    seen: list[dict[str, float]] = []
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: seen.append(dict(e.state.metrics)))
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(dict(e.state.metrics)))
    engine.run([0, 1], max_epochs=2)
    assert seen == [{}, {"epoch_loss": 2.0}, {}, {"epoch_loss": 6.0}]


def test_loss_terms_reads_one_dict_or_the_first_of_monais_decollated_list() -> None:
    batch = {"loss": torch.tensor(1.5), "loss_sia": 0.25, "lr": 1e-4, "attention": torch.ones(2, 3), "note": "text"}
    expected = {"loss": 1.5, "loss_sia": 0.25, "lr": 1e-4}
    assert loss_terms(batch) == expected
    decollated = [{"loss": 1.5, "loss_sia": 0.25, "lr": 1e-4}, {"loss": 9.0, "loss_sia": 9.0, "lr": 9.0}]
    assert loss_terms(decollated) == expected  # batch-level scalars are replicated: the first dict holds them
    assert loss_terms([]) == {} and loss_terms(None) == {}
