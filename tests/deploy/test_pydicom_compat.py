"""pydicom 2's ``pydicom._storage_sopclass_uids`` served from :mod:`pydicom.uid` under pydicom 3 (the shim MONAI Label's
``pydicom-seg`` needs, docs/MONAI_LABEL.md): the hook in this process, the ``.pth`` file in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pydicom.uid
import pytest

from sista_monai.deploy.pydicom_compat import (
    LEGACY_MODULE,
    PTH_LINE,
    PTH_NAME,
    StorageSOPClassUIDsFinder,
    install,
    write_pth_file,
)


@pytest.fixture
def clean_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A copy of ``sys.meta_path`` (restored after the test) and no legacy module imported before or left after."""
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    sys.modules.pop(LEGACY_MODULE, None)
    yield
    sys.modules.pop(LEGACY_MODULE, None)
    if hasattr(pydicom, "_storage_sopclass_uids"):
        delattr(pydicom, "_storage_sopclass_uids")


def test_pydicom_3_has_no_legacy_module(clean_imports: None) -> None:
    with pytest.raises(ModuleNotFoundError, match=r"pydicom\._storage_sopclass_uids"):
        __import__(LEGACY_MODULE)


def test_the_legacy_module_holds_the_uids_of_pydicom_uid(clean_imports: None) -> None:
    install()
    from pydicom._storage_sopclass_uids import SegmentationStorage  # type: ignore[import-not-found]

    assert SegmentationStorage == pydicom.uid.SegmentationStorage == "1.2.840.10008.5.1.4.1.1.66.4"
    legacy = sys.modules[LEGACY_MODULE]
    assert legacy.SecondaryCaptureImageStorage == pydicom.uid.SecondaryCaptureImageStorage
    assert legacy.ComputedRadiographyImageStorage == "1.2.840.10008.5.1.4.1.1.1"
    uids = {name for name, value in vars(pydicom.uid).items() if isinstance(value, pydicom.uid.UID)}
    assert uids <= set(vars(legacy)) and len(uids) > 100
    assert not hasattr(legacy, "generate_uid")  # the UIDs only, as pydicom 2's module held


def test_install_appends_one_hook_after_pythons_finders(clean_imports: None) -> None:
    before = list(sys.meta_path)
    finder = install()
    assert install() is finder and sys.meta_path == [*before, finder]
    assert isinstance(finder, StorageSOPClassUIDsFinder)
    assert finder.find_spec("pydicom.uid") is None and finder.find_spec("pydicom._other") is None


def test_the_pth_file_installs_the_hook_in_a_fresh_interpreter(tmp_path: Path) -> None:
    path = write_pth_file(tmp_path)
    assert path == tmp_path / PTH_NAME and path.read_text() == PTH_LINE + "\n"
    probe = (
        f"import site, sys; site.addsitedir({str(tmp_path)!r}); "
        "from pydicom._storage_sopclass_uids import SegmentationStorage; "
        "print(SegmentationStorage, sorted({'torch', 'monai'} & {m.split('.')[0] for m in sys.modules}))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["1.2.840.10008.5.1.4.1.1.66.4", "[]"]  # and neither torch nor MONAI imported


def test_importing_the_module_imports_nothing_heavy() -> None:
    probe = (
        "import sys; import sista_monai.deploy.pydicom_compat; "
        "print(sorted({'torch', 'monai', 'pydicom'} & {m.split('.')[0] for m in sys.modules}))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr[-3000:]


def test_write_pth_file_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no_such_folder: not a folder; give the site-packages folder"):
        write_pth_file(tmp_path / "no_such_folder")
