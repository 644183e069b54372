"""pydicom 2's ``pydicom._storage_sopclass_uids`` module under pydicom 3, for the DICOM tools built against it.

pydicom 3 (which this project needs) removed the private module ``pydicom._storage_sopclass_uids``; the storage SOP
class UIDs it held (``SegmentationStorage``, ...) live in :mod:`pydicom.uid` since pydicom 2.3. ``pydicom-seg`` 0.4.1,
the newest release, still imports the old module, and MONAI Label (0.8.5) imports ``pydicom-seg`` when its server
starts: without the old module the server fails with ``ModuleNotFoundError: No module named
'pydicom._storage_sopclass_uids'`` before serving anything (docs/MONAI_LABEL.md).

:func:`install` appends an import hook to :data:`sys.meta_path` that serves ``pydicom._storage_sopclass_uids`` as a
module holding the UIDs of :mod:`pydicom.uid`. It comes after Python's own finders, so where pydicom still ships the
module (pydicom 2) that module is imported and the hook is never asked. Importing this module imports nothing (no
pydicom, torch or MONAI); pydicom is imported when the old module is.

A server process must have the hook before it imports ``pydicom-seg``: a ``.pth`` file in the environment's
``site-packages`` holding the one line :data:`PTH_LINE` installs it at every interpreter start.
:func:`write_pth_file` writes that file::

    python -c "from sista_monai.deploy.pydicom_compat import write_pth_file; print(write_pth_file())"
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__all__ = ["LEGACY_MODULE", "PTH_LINE", "PTH_NAME", "StorageSOPClassUIDsFinder", "install", "write_pth_file"]

LEGACY_MODULE = "pydicom._storage_sopclass_uids"
"""The module pydicom 3 no longer has."""

PTH_LINE = "import sista_monai.deploy.pydicom_compat; sista_monai.deploy.pydicom_compat.install()"
"""The line of a ``.pth`` file that installs the hook when the interpreter starts (``site`` runs ``import`` lines)."""

PTH_NAME = "sista_monai_pydicom_compat.pth"
"""The file :func:`write_pth_file` writes."""


class StorageSOPClassUIDsFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and loads :data:`LEGACY_MODULE` as a module holding every UID of :mod:`pydicom.uid`."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != LEGACY_MODULE:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # Python's default module object

    def exec_module(self, module: ModuleType) -> None:
        uid = importlib.import_module("pydicom.uid")
        module.__dict__.update({name: value for name, value in vars(uid).items() if isinstance(value, uid.UID)})


def install() -> StorageSOPClassUIDsFinder:
    """Append the hook to :data:`sys.meta_path` (once: a second call returns the installed one)."""
    for finder in sys.meta_path:
        if isinstance(finder, StorageSOPClassUIDsFinder):
            return finder
    finder = StorageSOPClassUIDsFinder()
    sys.meta_path.append(finder)
    return finder


def write_pth_file(site_packages: str | Path | None = None) -> Path:
    """Write :data:`PTH_NAME` (the line :data:`PTH_LINE`) into ``site_packages``, by default the running
    environment's (``sysconfig``'s ``purelib``); returns the file.

    Raises:
        FileNotFoundError: ``site_packages`` is not a folder.
    """
    folder = Path(site_packages if site_packages is not None else sysconfig.get_paths()["purelib"])
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder; give the site-packages folder of the environment")
    path = folder / PTH_NAME
    path.write_text(PTH_LINE + "\n")
    return path
