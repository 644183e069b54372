"""A bundle's training run with MONAI's own ``--tracking mlflow``, read back from its local MLflow store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bundle_helpers import as_cli, run_cli


def train_with_mlflow(command: list[str], overrides: dict[str, Any]) -> list[dict[str, list[tuple[int, float]]]]:
    """Run ``command`` with ``overrides`` and ``--tracking mlflow`` as it is (MONAI's default settings: a SQLite
    store ``mlruns.db`` in the bundle's ``output_dir``); the runs of its experiment in the order they started,
    each as metric name → ``(step, value)`` history."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    bundle_root = Path(overrides["bundle_root"])
    result = run_cli(command + as_cli(overrides) + ["--tracking", "mlflow"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    databases = list(bundle_root.rglob("mlruns.db"))
    assert len(databases) == 1, databases
    client = MlflowClient(tracking_uri=f"sqlite:///{databases[0]}")
    experiment = client.get_experiment_by_name("monai_experiment")
    runs = sorted(client.search_runs([experiment.experiment_id]), key=lambda run: run.info.start_time)
    return [
        {
            name: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, name))
            for name in run.data.metrics
        }
        for run in runs
    ]


def assert_mlflow_tracking(
    command: list[str], overrides: dict[str, Any], epoch_terms: set[str], validation: set[str], test: dict[str, Any]
) -> None:
    """Train with ``--tracking mlflow`` (:func:`train_with_mlflow`). The training run holds the loss of every
    iteration (``train_loss``, MONAI's tag), the epoch mean of every loss term (``epoch_<term>``) and the validation
    metrics, one value per epoch; the test evaluator's run (MONAI's ``evaluator`` settings; the trainer's run is
    closed when training completes) holds the test metrics equal to ``eval/metrics.json`` (``test``: metric → its
    path of keys in that file)."""
    runs = train_with_mlflow(command, overrides)
    epochs = int(overrides["epochs"])
    assert len(runs) == 2, [sorted(run) for run in runs]
    training, testing = runs
    per_epoch = {f"epoch_{term}" for term in epoch_terms} | validation
    assert {"train_loss"} | per_epoch <= set(training), sorted(training)
    steps = [step for step, _ in training["train_loss"]]
    assert len(steps) > epochs and steps == sorted(set(steps))
    for name in per_epoch:
        assert [step for step, _ in training[name]] == list(range(1, epochs + 1)), (name, training[name])
    report = json.loads((Path(overrides["bundle_root"]) / "eval" / "metrics.json").read_text())
    for name, keys in test.items():
        expected = report
        for key in keys:
            expected = expected[key]
        assert testing[name] == [(1, pytest.approx(expected, abs=1e-6))], (name, testing.get(name), expected)
