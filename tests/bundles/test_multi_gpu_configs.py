"""Every bundle's multi_gpu_train.json sets up and tears down the process group the same, tested way."""

from __future__ import annotations

import json

import pytest
from bundle_helpers import REPO_ROOT

CONFIGS = sorted((REPO_ROOT / "bundles").glob("*/configs/multi_gpu_train.json"))


def test_all_four_bundles_have_one() -> None:
    assert {p.parts[-3] for p in CONFIGS} == {
        "pretrain",
        "rsna_pneumonia_classification",
        "siim_pneumothorax_segmentation",
        "rsna_pneumonia_detection",
    }


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.parts[-3])
def test_process_group_timeout_and_teardown(path) -> None:
    config = json.loads(path.read_text())
    assert config["dist_timeout_s"] == 1800
    assert any("init_process_group" in e and "timedelta(seconds=@dist_timeout_s)" in e for e in config["initialize"])
    finalize = config["finalize"]
    assert finalize[0] == "$import sista_monai.distributed"
    # a plain final dist.barrier() let a gloo rank abort at interpreter exit ("terminate called without an active
    # exception"); the last step waits for every rank and keeps the barrier's work alive (sista_monai.distributed)
    assert finalize[-1] == "$sista_monai.distributed.finish_process_group()"
    assert not any("destroy_process_group" in step for step in finalize)
