"""The model-zoo file rules checked on a packaged bundle folder, and its ``large_files.yml`` written.

The rules are listed in the docstring of :mod:`sista_monai.package`; :func:`check_bundle_folder` returns one line per
violation. Files over the per-file limit stay in the folder and are listed in ``large_files.yml`` with their
SHA-256 (:func:`_write_large_files`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sista_monai.io.files import sha256_file

__all__ = ["INFERENCE_KEYS", "LARGE_FILES", "SIZE_LIMIT_MB", "check_bundle_folder"]

SIZE_LIMIT_MB = 25.0
"""The model zoo's limit for one file of a bundle (GitHub's), in MiB."""

LARGE_FILES = "large_files.yml"
NECESSARY_FILES = ("configs/metadata.json", "LICENSE")
PREFERRED_FILES = ("models/model.pt", "configs/inference.json")
PROJECT_FILES = ("docs/README.md", "docs/data_license.txt")
INFERENCE_KEYS = ("bundle_root", "device", "network_def", "inferer", "output_dir")


def _mib(size: int) -> str:
    return f"{size / 2**20:.2f} MiB"


def _strings(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Every string of a config with its ``#``-joined id."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{key}#{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{key}#{i}")


def _path_problems(config: dict[str, Any], name: str) -> list[str]:
    """Rule 5: no absolute path and no path into this repository's ``bundles/`` folder in a config."""
    problems = []
    for key, value in _strings(config):
        text = value.strip()
        if re.search(r"(^|['\"/ ])bundles/", text):
            problems.append(f"{name}: {key} = {value!r} points into the repository's bundles/ folder")
        elif text.startswith("/") or re.match(r"^[A-Za-z]:\\", text):
            problems.append(f"{name}: {key} = {value!r} is an absolute path")
    return problems


def _large_file_entries(folder: Path) -> tuple[list[dict[str, Any]], list[str]]:
    import yaml

    path = folder / LARGE_FILES
    if not path.is_file():
        return [], [f"{LARGE_FILES}: missing"]
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        return [], [f"{LARGE_FILES}: not valid YAML ({err})"]
    entries = content.get("large_files") if isinstance(content, dict) else None
    if not isinstance(entries, list):
        return [], [f"{LARGE_FILES}: expected a 'large_files' list"]
    return entries, []


def check_bundle_folder(folder: str | Path, size_limit_mb: float = SIZE_LIMIT_MB) -> list[str]:
    """The model-zoo file rules (see the module docstring) checked on a packaged bundle folder.

    Args:
        folder: the bundle folder.
        size_limit_mb: the largest file the folder may hold without a ``large_files.yml`` entry, in MiB.

    Returns:
        One line per violated rule, naming the file; empty when the folder passes.
    """
    folder = Path(folder)
    problems: list[str] = []
    entries, yaml_problems = _large_file_entries(folder)
    problems += yaml_problems
    listed: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not {"path", "url", "hash_val", "hash_type"} <= set(entry):
            problems.append(f"{LARGE_FILES}: entry {entry!r} lacks path, url, hash_val or hash_type")
            continue
        listed[str(entry["path"])] = entry
        target = folder / str(entry["path"])
        if entry["hash_type"] != "sha256":
            problems.append(f"{LARGE_FILES}: {entry['path']} has hash_type {entry['hash_type']!r}, expected sha256")
        elif not target.is_file():
            problems.append(f"{LARGE_FILES}: {entry['path']} is listed but not in the folder")
        elif sha256_file(target) != entry["hash_val"]:
            problems.append(f"{LARGE_FILES}: {entry['path']} SHA-256 differs from hash_val {entry['hash_val']}")
    for name in NECESSARY_FILES + PREFERRED_FILES + PROJECT_FILES:
        if not (folder / name).is_file() and name not in listed:
            problems.append(f"{name}: missing")
    limit = int(size_limit_mb * 2**20)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if path.stat().st_size > limit and relative not in listed:
            problems.append(
                f"{relative}: {_mib(path.stat().st_size)} is over the {size_limit_mb:g} MiB limit and not listed in "
                f"{LARGE_FILES}"
            )
    metadata_path = folder / "configs" / "metadata.json"
    if metadata_path.is_file():
        metadata = json.loads(metadata_path.read_text())
        if "version" not in metadata or "changelog" not in metadata:
            problems.append("configs/metadata.json: 'version' or 'changelog' is missing")
        elif metadata["version"] not in metadata["changelog"]:
            problems.append(f"configs/metadata.json: version {metadata['version']} has no changelog entry")
    inference_path = folder / "configs" / "inference.json"
    if inference_path.is_file():
        inference = json.loads(inference_path.read_text())
        missing = [key for key in INFERENCE_KEYS if key not in inference]
        if missing:
            problems.append(f"configs/inference.json: lacks {missing}")
    for config_path in sorted((folder / "configs").glob("*.json")):
        problems += _path_problems(json.loads(config_path.read_text()), f"configs/{config_path.name}")
    return problems


def _write_large_files(work: Path, size_limit_mb: float, large_file_url: str | None) -> list[dict[str, Any]]:
    """``large_files.yml`` in the folder ``work``: every file over ``size_limit_mb`` with its SHA-256, ``url`` under
    ``large_file_url`` (else empty); returns its entries."""
    limit = int(size_limit_mb * 2**20)
    large = []
    for path in sorted(p for p in work.rglob("*") if p.is_file()):
        if path.stat().st_size > limit:
            relative = path.relative_to(work).as_posix()
            url = f"{large_file_url.rstrip('/')}/{relative}" if large_file_url else ""
            large.append({"path": relative, "url": url, "hash_val": sha256_file(path), "hash_type": "sha256"})
    import yaml

    (work / LARGE_FILES).write_text(
        "# files over the model zoo's per-file limit: left out of a pull request, downloaded from url\n"
        + yaml.safe_dump({"large_files": large}, sort_keys=False)
    )
    return large
