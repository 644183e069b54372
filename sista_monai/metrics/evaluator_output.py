"""What the pretraining metrics share: reading the evaluator's output, and adding their counts up over the ranks."""

from __future__ import annotations

from typing import Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from sista_monai.distributed import world_info

idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")

__all__: list[str] = []  # private helpers of the metrics modules (grounding, counterfactual, SIA flags, sparsity)


def _output(output: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    if isinstance(output, dict):
        return output["pred"], output.get("label") or {}
    return output


def _sum_over_ranks(values: list[float], device: torch.device) -> list[float]:
    if world_info()[1] == 1:
        return values
    return idist.all_reduce(torch.tensor(values, dtype=torch.float64, device=device)).tolist()
