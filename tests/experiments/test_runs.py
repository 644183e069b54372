"""The recorded configuration of a run, and the bundle defaults read from train.json."""

from __future__ import annotations

import json
from pathlib import Path

from sista_monai.experiments.runs import RUN_CONFIG, changed_keys, record_config
from sista_monai.experiments.variants import PRETRAIN_CONFIG, bundle_defaults


def test_bundle_defaults_are_read_from_train_json() -> None:
    config = json.loads(Path(PRETRAIN_CONFIG).read_text())
    defaults = bundle_defaults()
    for key in ("sta_contrast", "sta_pairs", "patch_centering", "sia_threshold", "lambda_token"):
        assert defaults[key] == config[key]
    assert "image_encoder" not in defaults and "device" not in defaults  # sections and expressions left out


def test_changed_keys_against_the_record(tmp_path: Path) -> None:
    assert changed_keys(tmp_path, {"a": 1}, {}) == []  # no record: nothing to compare
    record_config(tmp_path, {"sta_contrast": "both", "epochs": 10, "sizes": (1, 2), "num_workers": 0})
    assert json.loads((tmp_path / RUN_CONFIG).read_text())["sizes"] == [1, 2]
    same = {"sta_contrast": "both", "epochs": 10, "sizes": (1, 2), "num_workers": 4}
    assert changed_keys(tmp_path, same, {}) == []  # a tuple compares equal to its record; num_workers is not compared
    assert changed_keys(tmp_path, {**same, "sta_contrast": "within"}, {}) == ["sta_contrast"]
    # a key added to the bundle defaults since the run does not count; a new override does
    assert changed_keys(tmp_path, {**same, "sta_pairs": "matched"}, {"sta_pairs": "matched"}) == []
    assert changed_keys(tmp_path, {**same, "sta_pairs": "matched"}, {}) == ["sta_pairs"]
    assert changed_keys(tmp_path, {"sta_contrast": "both", "sizes": [1, 2]}, {}) == ["epochs"]  # dropped
