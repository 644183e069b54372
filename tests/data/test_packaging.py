"""A plain (non-editable) install ships the released splits and the demo generator.

The package is installed with pip into a fresh virtual environment (no network: ``--no-index``, no build
isolation, no dependencies); the dependencies come from the test's own environment through a ``.pth`` line.
From a working directory outside the repository, the installed package must find its released splits with
:mod:`importlib.resources` and load the same ids as the checkout, and generate the same demo data.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from sista_monai.data.demo import ensure_demo_data
from sista_monai.data.splits import DATASETS, SPLIT_FILES, load_split

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", "sista_monai", "transforms", "data/splits")
DEMO = {"n": 20, "size": 64, "seed": 1}

# run by the installed interpreter, from outside the repository
PROBE = """
import hashlib, json, sys
from pathlib import Path
import sista_monai
from sista_monai.data.demo import ensure_demo_data
from sista_monai.data.splits import DATASETS, default_splits_dir, load_split
splits = {
    dataset: {name: [len(ids), hashlib.sha256("\\n".join(sorted(ids)).encode()).hexdigest()]
              for name, ids in load_split(dataset).subsets.items()}
    for dataset in DATASETS
}
demo = ensure_demo_data(Path(sys.argv[1]), **json.loads(sys.argv[2]))
print(json.dumps({"package": sista_monai.__file__, "splits_dir": str(default_splits_dir()), "splits": splits,
                  "manifest": (demo / "manifest.json").read_text()}))
"""


def _digest(ids: frozenset[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


@pytest.mark.slow
def test_plain_install_loads_the_released_splits_and_generates_the_demo(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", reason="the build backend (setuptools) is needed to build without isolation")
    source = tmp_path / "source"  # a copy, so that building leaves nothing in the checkout
    for name in SOURCES:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    target = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet"]
        + ["--target", str(target), str(source)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    installed = target / "sista_monai" / "data" / "released_splits"
    assert sorted(p.name for p in installed.iterdir() if p.suffix != ".py" and p.name != "__pycache__") == [
        "README.md",
        "SHA256SUMS",
        "rsna",
        "siim",
    ]
    # the dependencies of the package, from this environment (its .pth files, e.g. an editable install's
    # finder, are not processed for a path added this way, so the plain install is the one imported)
    (target / "test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    probe = subprocess.run(
        [str(python), "-c", PROBE, str(outside / "demo"), json.dumps(DEMO)],
        capture_output=True,
        text=True,
        env={**env, "OMP_NUM_THREADS": "1"},
        cwd=outside,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    result = json.loads(probe.stdout.strip().splitlines()[-1])

    assert Path(result["package"]).is_relative_to(target)  # the plain install, not the checkout
    assert Path(result["splits_dir"]) == installed
    expected = {
        dataset: {name: [len(ids), _digest(ids)] for name, ids in load_split(dataset).subsets.items()}
        for dataset in DATASETS
    }
    assert result["splits"] == expected
    assert set(result["splits"]["rsna"]) == set(SPLIT_FILES)
    assert [result["splits"]["rsna"][name][0] for name in SPLIT_FILES] == [18678, 4003, 4003, 187, 1868]
    assert [result["splits"]["siim"][name][0] for name in SPLIT_FILES] == [8433, 1807, 1807, 85, 844]

    here = ensure_demo_data(tmp_path / "demo_here", **DEMO)
    assert result["manifest"] == (here / "manifest.json").read_text()  # every file's SHA-256 is the same
    assert json.loads(result["manifest"])["counts"]["studies"] == DEMO["n"]
