"""The README's main job, unchanged, against the targets of the demo run (issue 15, point 4).

The bundle runs once with its defaults (fresh demo data in a temporary folder, outputs in another) and every
target of ``sista_monai.metrics.pretraining.TARGETS`` is checked on its test report. Targets that the method as
specified does not reach at demo scale are marked as expected failures, strictly: the day one is met, the mark
must go. The evidence for each is in ``bundles/pretrain/docs/README.md`` ("Targets of the default run").
"""

from __future__ import annotations

import json
import math

import pytest
from bundle_helpers import run_cli

from sista_monai.metrics.pretraining import TARGETS

pytestmark = pytest.mark.slow

UNMET = {
    "lesion_grounding_over_prior": "STA does not ground lesion words beyond an image-free pointer at demo scale (docs: Targets)",
    "counterfactual_follow_rate": "a word's best patch follows its moved finding in well under half of the twins at demo scale (docs: Targets)",
}


@pytest.fixture(scope="module")
def default_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("default_run")
    args = [
        "python",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        "bundles/pretrain/configs/train.json",
        "--bundle_root",
        str(root / "pretrain"),
        "--dataset_dir",
        str(root / "demo"),
    ]
    result = run_cli(args, timeout=1200, env={"OMP_NUM_THREADS": "2"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((root / "pretrain" / "eval" / "metrics.json").read_text())
    report["_console"] = result.stdout + result.stderr
    return report


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(t, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=UNMET[t]))
        if t in UNMET
        else t
        for t in TARGETS
    ],
)
def test_default_run_meets_target(default_report: dict, target: str) -> None:
    """Only a measured shortfall is the expected failure: a missing key or a NaN is an error, never an xfail."""
    measured = default_report["measured"][target]
    if not isinstance(measured, (int, float)) or not math.isfinite(measured):
        raise ValueError(f"{target}: the measured value {measured!r} is not a finite number")
    assert measured >= TARGETS[target], f"{target}: measured {measured:.3f}, target {TARGETS[target]}"


def test_every_measured_value_is_finite(default_report: dict) -> None:
    grounding = default_report["grounding"]
    values = {
        **{f"measured.{k}": v for k, v in default_report["measured"].items()},
        **{f"lesion.{k}": v for k, v in grounding["lesion"].items()},
        **{f"counterfactual.{k}": grounding["counterfactual"][k] for k in ("follow_rate", "prior", "text_pointer")},
    }
    bad = {k: v for k, v in values.items() if not isinstance(v, (int, float)) or not math.isfinite(v)}
    assert not bad, bad
    assert grounding["counterfactual"]["trials"] > 100 and grounding["lesion"]["trials"] > 100


def test_the_console_through_a_pipe_is_short(default_report: dict) -> None:
    """Captured as CI, nohup or a scheduler captures it: at most 150 lines, a carriage return counting as a line
    break (a progress bar redrawn into a file), and one line per epoch."""
    console = default_report["_console"]
    lines = [line for line in console.replace("\r", "\n").splitlines() if line.strip()]
    assert len(lines) <= 150, f"{len(lines)} console lines:\n" + "\n".join(lines[:40])
    assert sum("Epoch: " in line and "iterations --" in line for line in lines) == 30
