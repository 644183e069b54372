"""The design of docs/ARCHITECTURE.md ("Imports run one way"), enforced on every module of the package.

* Every module at any depth is checked: ``sista_monai/**`` and the folders ``setup.cfg``'s ``package_dir`` maps into
  the package (``transforms/`` installed as ``sista_monai.transforms``, ``data/splits/`` as
  ``sista_monai.data.released_splits``).
* Every import of the package counts, absolute or relative (``from .x import y``, ``from ..io import z`` are resolved
  to the module they name), at module level, inside functions and under ``TYPE_CHECKING``: a module imports its own
  room and the rooms ``ALLOWED`` lists for it, nothing else. Importing the top package ``sista_monai`` (its empty
  ``__init__``) is always allowed: every import of the package runs it anyway.
* The tools (``bench``, ``experiments``, ``package``) may import every library room; no library room imports a tool,
  and no tool imports another.
* No import cycle between modules. The cycle check reads the imports that run when a module is imported, at module
  level (class bodies and ``try``/``if`` blocks included) and inside functions (run on first call, where a cycle
  is just as much two modules that need each other), but not those under ``if TYPE_CHECKING:`` (never run). An
  import names one module: ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to ``a.b``; the
  parent packages Python initialises on the way are not edges (a package's ``__init__`` that re-exports its own
  submodules would otherwise close a cycle with every one of them that imports a sibling by its full path).
"""

from __future__ import annotations

import ast
import configparser
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGE = "sista_monai"

LIBRARY: dict[str, set[str]] = {
    "errors": set(),
    "config": set(),
    "io": {"errors"},
    "distributed": {"errors"},
    "offline": {"errors"},
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
    },
    "deploy": {"errors", "io", "transforms", "data"},
}
"""Library room → the other library rooms it may import (its own room is always allowed)."""

TOOLS = ("bench", "experiments", "package")
"""Command-line tools built on the library: they import any library room, never another tool."""

ALLOWED: dict[str, set[str]] = {**LIBRARY, **{tool: set(LIBRARY) for tool in TOOLS}}
"""Room → the other rooms it may import (its own room is always allowed)."""


def package_folders(root: Path = ROOT) -> dict[str, Path]:
    """Package name → folder: ``sista_monai`` and the folders ``setup.cfg``'s ``package_dir`` maps into it."""
    config = configparser.ConfigParser()
    config.read(root / "setup.cfg")
    folders = {PACKAGE: root / PACKAGE}
    for line in config["options"].get("package_dir", "").splitlines():
        if "=" in line:
            name, folder = (part.strip() for part in line.split("=", 1))
            folders[name] = root / folder
    return folders


def package_modules(folders: Mapping[str, Path]) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` file at any depth of the folders (``__init__.py`` names its
    package)."""
    modules = {}
    for package, folder in folders.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def room_of(module: str) -> str:
    """The room of a module of the package: ``sista_monai.data.sources.rsna`` → ``data``; the top package's own
    ``__init__`` is the room ``sista_monai``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST, runtime_only: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements of a module; ``runtime_only`` leaves out those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if runtime_only and isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve(name: str, modules: Mapping[str, Path]) -> str | None:
    """The module of the package a dotted name lies in (the longest prefix that is a module), or ``None``."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _relative_base(package: str, level: int, name: str | None, where: str) -> str:
    """The absolute module of ``from <level dots><name> import ...`` in ``package`` (``level`` 0: ``name`` itself)."""
    if not level:
        return name or ""
    parts = package.split(".")
    if level > len(parts):
        raise ValueError(f"{where}: a relative import beyond the top package")
    parts = parts[: len(parts) - level + 1]
    return ".".join([*parts, name] if name else parts)


def imported_modules(module: str, modules: Mapping[str, Path], runtime_only: bool = False) -> dict[str, int]:
    """The modules of the package that ``module`` imports (relative imports resolved) → the first line importing it.

    Args:
        module: the importing module's dotted name (a key of ``modules``).
        modules: :func:`package_modules`.
        runtime_only: leave out the imports under ``if TYPE_CHECKING:``.
    """
    path = modules[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in _import_nodes(ast.parse(path.read_text(), str(path)), runtime_only):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = _relative_base(package, node.level, node.module, f"{path}:{node.lineno}")
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for name in names:
            target = _resolve(name, modules)
            if target is not None and target != module:
                found[target] = min(found.get(target, node.lineno), node.lineno)
    return found


def wrong_way_imports(modules: Mapping[str, Path], allowed: Mapping[str, set[str]]) -> list[str]:
    """Every import of a room that the importer's room may not import (and every module of an undeclared room)."""
    wrong = []
    for module in sorted(modules):
        room = room_of(module)
        if room == PACKAGE:  # run by every import of the package: it imports none of it
            targets = imported_modules(module, modules)
            wrong.extend(
                f"{module}:{line}: the top package imports {target}" for target, line in sorted(targets.items())
            )
            continue
        if room not in allowed:
            wrong.append(f"{module}: room {room!r} is not declared in ALLOWED")
            continue
        for target, line in sorted(imported_modules(module, modules).items()):
            other = room_of(target)
            if other not in (room, PACKAGE) and other not in allowed[room]:
                wrong.append(f"{module}:{line} ({room}) imports {target} ({other})")
    return wrong


def import_cycles(modules: Mapping[str, Path]) -> list[list[str]]:
    """The import cycles between modules (runtime imports, see the module docstring): one list of modules each,
    every strongly connected group of two or more modules, sorted."""
    graph = {module: sorted(imported_modules(module, modules, runtime_only=True)) for module in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(start: str) -> None:  # Tarjan's algorithm, iterative (no recursion limit on a long chain)
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(graph[target])))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(groups)


MODULES = package_modules(package_folders())


def test_every_module_is_found() -> None:
    """Modules two folders deep and the mapped folders are part of the check."""
    assert {"sista_monai.data.sources.rsna", "sista_monai.data.demo.generate", "sista_monai.transforms.io"} <= set(
        MODULES
    )
    assert MODULES["sista_monai.transforms"] == ROOT / "transforms" / "__init__.py"


def test_every_room_is_declared() -> None:
    rooms = {room_of(module) for module in MODULES} - {PACKAGE}
    assert rooms == set(ALLOWED), "a room without modules, or modules of a room missing from ALLOWED"


def test_imports_run_one_way() -> None:
    wrong = wrong_way_imports(MODULES, ALLOWED)
    assert not wrong, "\n".join(wrong)


def test_no_library_room_imports_a_tool_and_no_tool_another() -> None:
    for room, others in ALLOWED.items():
        assert not (others & set(TOOLS)), f"{room} may import a tool: {sorted(others & set(TOOLS))}"


def test_no_import_cycle() -> None:
    cycles = import_cycles(MODULES)
    assert not cycles, cycles


MAX_MODULE_LINES = 600
"""Issue 27: a module longer than this does several jobs; split it by job (its tests following it)."""


def long_modules(modules: Mapping[str, Path], limit: int = MAX_MODULE_LINES) -> list[str]:
    """``module (lines)`` for every module of more than ``limit`` lines."""
    counts = {name: len(path.read_text().splitlines()) for name, path in modules.items()}
    return sorted(f"{name} ({count})" for name, count in counts.items() if count > limit)


def test_no_module_is_over_600_lines() -> None:
    assert not long_modules(MODULES), long_modules(MODULES)


def test_the_length_check_sees_a_long_module(tmp_path: Path) -> None:
    modules = _fake_package(tmp_path, {"data/short.py": "x = 1\n" * 600, "data/long.py": "x = 1\n" * 601})
    assert long_modules(modules) == [f"{PACKAGE}.data.long (601)"]


def _fake_package(tmp_path: Path, files: Mapping[str, str]) -> dict[str, Path]:
    """A package ``sista_monai`` under ``tmp_path`` with the given files (paths relative to it) and empty
    ``__init__.py`` files in every folder; returns :func:`package_modules` of it."""
    top = tmp_path / PACKAGE
    for relative, text in files.items():
        path = top / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in [top, *(path for path in top.rglob("*") if path.is_dir())]:
        (folder / "__init__.py").touch()
    return package_modules({PACKAGE: top})


def test_the_checker_sees_a_wrong_way_absolute_import(tmp_path: Path) -> None:
    modules = _fake_package(
        tmp_path,
        {
            "engines/trainer.py": "",
            "io/files.py": "",
            "handlers/handler.py": (
                "import sista_monai.io.files\n\ndef f():\n    from sista_monai.engines.trainer import Trainer\n"
            ),
        },
    )
    assert imported_modules("sista_monai.handlers.handler", modules) == {
        "sista_monai.io.files": 1,
        "sista_monai.engines.trainer": 4,
    }
    assert wrong_way_imports(modules, ALLOWED) == [
        "sista_monai.handlers.handler:4 (handlers) imports sista_monai.engines.trainer (engines)"
    ]


def test_the_checker_sees_a_wrong_way_relative_import(tmp_path: Path) -> None:
    modules = _fake_package(
        tmp_path,
        {
            "engines/trainer.py": "",
            "io/files.py": "",
            "handlers/reports.py": "",
            "handlers/handler.py": "from . import reports\nfrom .reports import X\nfrom ..io import files\n",
            "engines/runner.py": "from ..handlers.reports import Report\n",
        },
    )
    assert imported_modules("sista_monai.handlers.handler", modules) == {
        "sista_monai.handlers.reports": 1,
        "sista_monai.io.files": 3,
    }
    assert wrong_way_imports(modules, ALLOWED) == [
        "sista_monai.engines.runner:1 (engines) imports sista_monai.handlers.reports (handlers)"
    ]


def test_the_checker_sees_a_module_two_folders_deep(tmp_path: Path) -> None:
    modules = _fake_package(
        tmp_path,
        {"engines/trainer.py": "", "data/sources/rsna.py": "from ...engines import trainer\n"},
    )
    assert "sista_monai.data.sources.rsna" in modules
    assert wrong_way_imports(modules, ALLOWED) == [
        "sista_monai.data.sources.rsna:1 (data) imports sista_monai.engines.trainer (engines)"
    ]


def test_the_checker_sees_a_tool_imported_by_a_library_room_or_another_tool(tmp_path: Path) -> None:
    modules = _fake_package(
        tmp_path,
        {
            "package.py": "from sista_monai.io import files\n",
            "io/files.py": "",
            "bench/data.py": "from sista_monai import package\nfrom sista_monai.engines import step\n",
            "engines/step.py": "",
            "metrics/retrieval.py": "def f():\n    import sista_monai.bench.data\n",
        },
    )
    assert wrong_way_imports(modules, ALLOWED) == [
        "sista_monai.bench.data:1 (bench) imports sista_monai.package (package)",
        "sista_monai.metrics.retrieval:2 (metrics) imports sista_monai.bench.data (bench)",
    ]


def test_the_checker_sees_an_undeclared_room_and_an_import_in_the_top_package(tmp_path: Path) -> None:
    modules = _fake_package(tmp_path, {"newroom/x.py": "", "__init__.py": "from .newroom import x\n"})
    wrong = wrong_way_imports(modules, ALLOWED)
    assert len(wrong) == 3
    assert "the top package imports sista_monai.newroom.x" in wrong[0]
    assert all("room 'newroom' is not declared" in line for line in wrong[1:])


def test_the_checker_sees_a_cycle(tmp_path: Path) -> None:
    modules = _fake_package(
        tmp_path,
        {
            "bench/data.py": "def main():\n    from sista_monai.bench import data_scale\n",
            "bench/data_scale.py": "from .data import write\n",
            "bench/gpu.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import loss\n",
            "bench/loss.py": "from sista_monai.bench.gpu import run\n",
            "io/a.py": "import sista_monai.io.b\n",
            "io/b.py": "try:\n    from . import c\nexcept ImportError:\n    pass\n",
            "io/c.py": "class C:\n    from .a import X\n",
        },
    )
    assert not wrong_way_imports(modules, ALLOWED)
    assert import_cycles(modules) == [
        ["sista_monai.bench.data", "sista_monai.bench.data_scale"],
        ["sista_monai.io.a", "sista_monai.io.b", "sista_monai.io.c"],
    ]


def test_light_modules_do_not_load_torch() -> None:
    """Reading JSON, splits and errors must not pay for importing torch (command-line tools start fast)."""
    code = (
        "import sys, sista_monai.errors, sista_monai.config, sista_monai.distributed, sista_monai.io.files, "
        "sista_monai.data.splits; print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_every_package_folder_is_installed() -> None:
    """A package folder missing from setup.cfg's ``packages`` works in the editable checkout and is absent from a
    wheel (and from the wheel ``python -m sista_monai.package`` ships): every folder is listed."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = {line.strip() for line in config["options"]["packages"].splitlines() if line.strip()}
    folders = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "sista_monai").rglob("__init__.py")
        if "__pycache__" not in path.parts
    }
    assert folders - listed == set()
