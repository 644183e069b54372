"""Boolean config values as typed on the command line."""

from __future__ import annotations

import pytest

from sista_monai.config import as_flag


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
