"""The sista-monai wheel shipped in the packaged bundle, built offline from a copy of the source tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from sista_monai.package.configs import _fail

__all__ = ["WHEEL_SOURCES"]

WHEEL_SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", "sista_monai", "transforms", "data/splits")
"""What building the wheel needs from the source tree (copied, so that building leaves nothing in it)."""


def _project_root(project: Path | None) -> Path:
    import sista_monai

    root = project if project is not None else Path(sista_monai.__file__).resolve().parents[1]
    if not (root / "setup.cfg").is_file():
        raise _fail(root, "no sista-monai source tree here (setup.cfg missing); pass the checkout with --project")
    return root


def _build_wheel(project: Path, dest: Path) -> Path:
    """Build the sista-monai wheel offline (no index, no build isolation) from a copy of the source tree."""
    dest = dest.absolute()  # pip runs in the temporary folder: a relative destination would land there
    with tempfile.TemporaryDirectory(prefix="sista_wheel_") as tmp:
        source = Path(tmp) / "source"
        for name in WHEEL_SOURCES:
            if not (project / name).exists():
                raise _fail(project / name, "missing from the source tree; the wheel cannot be built")
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            if (project / name).is_dir():
                shutil.copytree(project / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(project / name, source / name)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--quiet"]
            + [str(source), "--wheel-dir", str(dest)],
            capture_output=True,
            text=True,
            cwd=tmp,
        )
    wheels = sorted(dest.glob("sista_monai-*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        reason = (result.stderr.strip().splitlines() or ["no wheel written"])[-1]
        raise _fail(project, f"building the wheel failed ({reason})")
    return wheels[0]
