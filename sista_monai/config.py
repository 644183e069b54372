"""Reading config values the way users type them on the ``python -m monai.bundle run`` command line.

MONAI's bundle runner parses ``--key value`` with Python Fire: ``False`` becomes a boolean but ``false`` stays the
string ``"false"``, which is truthy. Boolean keys of the bundles go through :func:`as_flag`, which
accepts both spellings and refuses anything else instead of silently reading it as ``True``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["as_flag"]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def as_flag(value: Any, name: str = "value") -> bool:
    """``True``/``False``, or their spellings ``true``/``false``/``yes``/``no``/``on``/``off``/``1``/``0``.

    Raises:
        ValueError: anything else (the message names the config key ``name``).
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name} must be true or false, got {value!r}")
