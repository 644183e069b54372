"""Running the pretraining bundle's test evaluation with its report (the bundle configs' ``finalize`` step)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sista_monai.handlers.reports import PretrainingReport

__all__ = ["write_test_report"]


def write_test_report(
    evaluator: Any,
    output_path: str | os.PathLike,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the test evaluator with a :class:`~sista_monai.handlers.PretrainingReport` attached (its other handlers,
    e.g. the alignment heat maps, are the evaluator's own).

    Args:
        evaluator: the test evaluator.
        output_path: where ``metrics.json`` goes (written atomically by rank 0).
        info: configuration facts recorded in the report (see
            :func:`~sista_monai.metrics.pretraining.summarise_test_metrics`).

    Returns:
        The summary written (on rank 0; an empty dict on the other ranks).
    """
    path = Path(output_path)
    report = PretrainingReport(path.parent, info=info, metrics_file=path.name)
    report.attach(evaluator)
    evaluator.run()
    return report.summary
