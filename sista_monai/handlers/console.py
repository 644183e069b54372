"""The training console: one line per epoch with the epoch means of the loss terms, per-iteration lines on request.

MONAI's ``StatsHandler`` logs ``output_transform(engine.state.output)`` at every iteration and, at the end of an
epoch, only ``engine.state.metrics`` (which a trainer without training metrics leaves empty). Beside a progress
bar the per-iteration lines are noise; :class:`EpochSummaryStatsHandler` keeps ``StatsHandler`` (same logger,
format, exception logging and ``iteration_log`` switch) and adds the missing epoch line.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.handlers import StatsHandler
from monai.utils import IgniteInfo, min_version, optional_import

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["EpochSummaryStatsHandler", "epoch_summary"]


def _scalar(value: Any) -> float | None:
    """``value`` as a float when it is a number or a one-element tensor, else ``None``."""
    if torch.is_tensor(value):
        return float(value.detach().item()) if value.numel() == 1 else None
    if isinstance(value, (bool, int, float)):
        return float(value)
    return None


def _format(value: float) -> str:
    """Four decimals, as ``StatsHandler``; small non-zero values (learning rates) in scientific notation."""
    return f"{value:.4f}" if value == 0 or not math.isfinite(value) or abs(value) >= 1e-3 else f"{value:.2e}"


def epoch_summary(
    epoch: int,
    max_epochs: int | None,
    iterations: int,
    values: Mapping[str, float],
    seconds: float | None = None,
) -> str:
    """The epoch line: ``Epoch: 3/30, 26 iterations -- loss: 1.2345 loss_sia: 0.9876 ... (9.9 s)``."""
    head = f"Epoch: {epoch}/{max_epochs if max_epochs is not None else '?'}, {iterations} iterations --"
    terms = " ".join(f"{name}: {_format(value)}" for name, value in values.items())
    tail = f" ({seconds:.1f} s)" if seconds is not None else ""
    return f"{head} {terms}{tail}"


class EpochSummaryStatsHandler(StatsHandler):
    """MONAI's ``StatsHandler`` that also logs one line per epoch: the epoch means of ``output_transform``'s values.

    ``output_transform(engine.state.output)`` may return a dict of scalars (e.g.
    :func:`sista_monai.handlers.loss_terms`) or one scalar (named ``tag_name``). Each is averaged over the
    iterations of the epoch, except the names in ``last_value_keys`` (the learning rate by default), which show
    the value of the epoch's last iteration. Non-finite values are kept, so a NaN loss shows in the mean. The
    line also gives the number of iterations and the seconds the epoch took; a resumed run logs where it resumes,
    and the end of the run one more line with the total time (Ignite's own engine lines, which say the same, are
    left to the logging configuration: the bundles' ``logging.conf`` keeps them at WARNING). Under ``torchrun`` it
    reports the values the attaching rank saw (attach it on rank 0 only, as the bundles' ``multi_gpu_train.json``
    do for every console handler).

    Unlike ``StatsHandler``, ``iteration_log`` defaults to ``False``: the per-iteration lines are for
    debugging (the bundles switch them on with ``--iteration_log true``). The trainer's
    ``engine.state.metrics``, if any, are logged as by ``StatsHandler`` before the epoch line.

    Args:
        iteration_log: ``StatsHandler``'s argument: log a line at each iteration (or a filter callable).
        epoch_log: ``StatsHandler``'s argument: log at each epoch end; ``False`` also drops the epoch line.
        output_transform: ``StatsHandler``'s argument: what of ``engine.state.output`` to log.
        last_value_keys: the names shown by their last value of the epoch instead of their mean.
        metrics_prefix: the epoch's values are also put into ``engine.state.metrics`` as ``<prefix><name>`` after
            the line is logged (and taken out when the next epoch starts), so that the experiment trackers that log
            the trainer's metrics at each epoch — MONAI's ``MLFlowHandler`` of ``--tracking mlflow``, whose
            per-iteration value is the total loss only, and the TensorBoard handler — receive every loss term;
            ``None`` leaves the metrics alone.
        kwargs: the other arguments of ``StatsHandler`` (``name``, ``tag_name``, ``key_var_format``, ...).
    """

    def __init__(
        self,
        iteration_log: bool | Callable[[Engine, int], bool] = False,
        epoch_log: bool | Callable[[Engine, int], bool] = True,
        output_transform: Callable = lambda x: x[0],
        last_value_keys: Sequence[str] = ("lr",),
        metrics_prefix: str | None = "epoch_",
        **kwargs: Any,
    ) -> None:
        super().__init__(iteration_log=iteration_log, epoch_log=epoch_log, output_transform=output_transform, **kwargs)
        self.last_value_keys = tuple(last_value_keys)
        self.metrics_prefix = metrics_prefix
        self._published: list[str] = []
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._last: dict[str, float] = {}
        self._iterations = 0
        self._epoch_start = time.perf_counter()

    def attach(self, engine: Engine) -> None:
        """``StatsHandler.attach``, plus the collection of the epoch's values."""
        super().attach(engine)
        if not engine.has_event_handler(self._reset, Events.EPOCH_STARTED):
            engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        if not engine.has_event_handler(self._collect, Events.ITERATION_COMPLETED):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        if self.epoch_log and not engine.has_event_handler(self._started, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self._started)
        if self.epoch_log and not engine.has_event_handler(self._finished, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self._finished)

    def _reset(self, engine: Engine) -> None:
        for name in self._published:  # last epoch's values: not this epoch's metrics
            engine.state.metrics.pop(name, None)
        self._published = []
        self._sums, self._counts, self._last = {}, {}, {}
        self._iterations = 0
        self._epoch_start = time.perf_counter()

    def _started(self, engine: Engine) -> None:
        if engine.state.iteration > 0:  # a resumed run (Ignite's own line is left to the logging configuration)
            self.logger.info(
                "resuming from iteration %d, epoch %d of %s",
                engine.state.iteration,
                engine.state.epoch,
                engine.state.max_epochs,
            )

    def _finished(self, engine: Engine) -> None:
        seconds = engine.state.times.get(Events.COMPLETED.name) or 0.0
        self.logger.info("Finished at epoch %d/%s (%.1f s)", engine.state.epoch, engine.state.max_epochs, seconds)

    def _collect(self, engine: Engine) -> None:
        self._iterations += 1
        output = self.output_transform(engine.state.output)
        if output is None:
            return
        items = output.items() if isinstance(output, Mapping) else [(self.tag_name, output)]
        for name, value in items:
            number = _scalar(value)
            if number is None:
                continue
            self._sums[name] = self._sums.get(name, 0.0) + number
            self._counts[name] = self._counts.get(name, 0) + 1
            self._last[name] = number

    def summary(self) -> dict[str, float]:
        """The values of the epoch so far: means, or last values for ``last_value_keys``."""
        return {
            name: self._last[name] if name in self.last_value_keys else total / self._counts[name]
            for name, total in self._sums.items()
        }

    def epoch_completed(self, engine: Engine) -> None:
        """``StatsHandler``'s epoch log (the trainer's metrics, if any), then the epoch line."""
        super().epoch_completed(engine)
        values = self.summary()
        if not values:
            return
        seconds = engine.state.times.get(Events.EPOCH_COMPLETED.name)
        if seconds is None or not math.isfinite(seconds):
            seconds = time.perf_counter() - self._epoch_start
        self.logger.info(
            epoch_summary(
                self.global_epoch_transform(engine.state.epoch),
                engine.state.max_epochs,
                self._iterations,
                values,
                seconds,
            )
        )
        if self.metrics_prefix is not None:
            published = {f"{self.metrics_prefix}{name}": value for name, value in values.items()}
            engine.state.metrics.update(published)
            self._published = list(published)
