"""Imports run one way between the rooms of the package (docs/ARCHITECTURE.md, "Imports run one way")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "config": set(),
    "io": {"errors"},
    "distributed": {"errors"},
    "transforms": {"errors"},
    "networks": {"config", "io", "transforms"},
    "losses": {"config", "distributed"},
    "metrics": {"losses", "distributed"},
    "visualize": {"io", "metrics"},
    "data": {"errors", "config", "io", "distributed", "transforms"},
    "handlers": {"errors", "config", "io", "distributed", "transforms", "losses", "metrics", "visualize", "data"},
    "engines": {
        "errors",
        "config",
        "io",
        "distributed",
        "transforms",
        "networks",
        "losses",
        "metrics",
        "visualize",
        "data",
        "handlers",
    },
    "deploy": {"errors", "io", "transforms", "data", "handlers"},
}
"""Room → the other rooms it may import (the package's own room is always allowed)."""


def _room_files(room: str) -> list[Path]:
    if room == "transforms":
        return sorted((ROOT / "transforms").glob("*.py"))
    folder = ROOT / "sista_monai" / room
    return sorted(folder.glob("*.py")) if folder.is_dir() else [ROOT / "sista_monai" / f"{room}.py"]


def _imported_rooms(path: Path) -> set[str]:
    """The first-level ``sista_monai`` rooms a module imports, at module level or inside functions."""
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "sista_monai" and len(parts) > 1:
                rooms.add(parts[1])
    return rooms


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_imports_run_one_way(room: str) -> None:
    files = _room_files(room)
    assert files, f"no modules found for room {room!r}"
    wrong = {
        f"{path.relative_to(ROOT)} imports sista_monai.{other}"
        for path in files
        for other in _imported_rooms(path) - ALLOWED[room] - {room}
        if other in ALLOWED
    }
    assert not wrong, sorted(wrong)


def test_the_checker_sees_a_wrong_way_import(tmp_path: Path) -> None:
    module = tmp_path / "handler.py"
    module.write_text(
        "def f():\n    from sista_monai.engines.trainer import SISTAPrepareBatch\n    import sista_monai.io\n"
    )
    assert _imported_rooms(module) == {"engines", "io"}


def test_light_modules_do_not_load_torch() -> None:
    """Reading JSON, splits and errors must not pay for importing torch (command-line tools start fast)."""
    import subprocess
    import sys

    code = (
        "import sys, sista_monai.errors, sista_monai.config, sista_monai.distributed, sista_monai.io.files, "
        "sista_monai.data.splits; print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_every_package_folder_is_installed() -> None:
    """A package folder missing from setup.cfg's ``packages`` works in the editable checkout and is absent from a
    wheel (and from the wheel ``python -m sista_monai.package`` ships): every folder is listed."""
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = {line.strip() for line in config["options"]["packages"].splitlines() if line.strip()}
    folders = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "sista_monai").rglob("__init__.py")
        if "__pycache__" not in path.parts
    }
    assert folders - listed == set()
