"""What an experiment's finished run was configured with, so that a resumed study reuses only what still holds.

Beside each bundle run it starts, the ablation writes the configuration the run had (:data:`RUN_CONFIG`):
:func:`record_config` after the run, :func:`changed_keys` before reusing it. A bundle's defaults are read from its
``train.json`` (:func:`bundle_defaults`), never assumed, since they may change between the sessions of a study.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["NOT_COMPARED", "RUN_CONFIG", "as_json", "bundle_defaults", "changed_keys", "record_config"]

RUN_CONFIG = "ablation_config.json"
"""File name of a run's recorded configuration, in its bundle folder."""

NOT_COMPARED = frozenset({"num_workers", "iteration_log"})
"""Config keys that do not change a run's numbers: a change of them alone does not redo a run."""


def _literal(value: Any) -> bool:
    if isinstance(value, list):
        return all(_literal(v) for v in value)
    if isinstance(value, str):
        return not value.startswith(("$", "@", "%"))
    return value is None or isinstance(value, bool | int | float)


def bundle_defaults(config_file: str | Path) -> dict[str, Any]:
    """The literal top-level values of a bundle config (``train.json``): its defaults, read rather than assumed.

    Expressions (``$...``), references (``@...``, ``%...``) and nested sections are left out.
    """
    config = json.loads(Path(config_file).read_text())
    return {key: value for key, value in config.items() if _literal(value)}


def as_json(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` as JSON reads it back (tuples become lists), so that it compares equal to a recorded one."""
    return dict(json.loads(json.dumps(dict(config))))


def record_config(root: str | Path, config: Mapping[str, Any]) -> None:
    """Write a finished run's configuration beside it (:data:`RUN_CONFIG`)."""
    Path(root, RUN_CONFIG).write_text(json.dumps(as_json(config), indent=2, sort_keys=True) + "\n")


def changed_keys(root: str | Path, config: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[str]:
    """The keys whose value differs from the one recorded beside a run; ``[]`` when it has no record.

    A key present on one side only counts as changed, except a key of ``defaults`` that the record lacks (added
    to the bundle config since the run: the run had no such setting to differ in). :data:`NOT_COMPARED` keys are
    left out.
    """
    file = Path(root, RUN_CONFIG)
    if not file.is_file():
        return []
    recorded = json.loads(file.read_text())
    current = as_json(config)
    missing = object()
    return sorted(
        key
        for key in recorded.keys() | current.keys()
        if key not in NOT_COMPARED
        and not (key not in recorded and key in defaults)
        and recorded.get(key, missing) != current.get(key, missing)
    )
