"""Boolean config values as typed on the command line."""

from __future__ import annotations

import pytest

from sista_monai.config import as_flag
from sista_monai.networks import ChestXrayClassifier, ViTImageEncoder


def _vit(**kwargs) -> ViTImageEncoder:
    config = {
        "img_size": 32,
        "patch_size": 16,
        "preset": "tiny",
        "hidden_size": 16,
        "mlp_dim": 32,
        "num_layers": 1,
        "num_heads": 2,
    }
    return ViTImageEncoder(**{**config, **kwargs})


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("false", False), ("True", True), ("no", False), (1, True), (0, False)],
)
def test_flags_as_typed_on_the_command_line(value: object, expected: bool) -> None:
    assert as_flag(value) is expected


@pytest.mark.parametrize("value", ["maybe", 2, None, 0.5])
def test_non_flags_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="freeze_encoder must be true or false"):
        as_flag(value, "freeze_encoder")


def test_fine_tuning_spelled_false_on_the_command_line() -> None:
    network = ChestXrayClassifier(_vit(), freeze_encoder="false")  # `--freeze_encoder false` arrives as a string
    assert not network.freeze_encoder and all(p.requires_grad for p in network.head.parameters())
    assert any(p.requires_grad for p in network.encoder.parameters())
