"""The packaged ``configs/metadata.json``: versions and required packages as installed here, ``sista-monai`` the
wheel's; the pretraining bundle's ``network_data_format`` describes the image-only network."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from sista_monai.package.configs import _fail

__all__: list[str] = []


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _pretraining_metadata(metadata: dict[str, Any], sidecar: dict[str, Any]) -> dict[str, Any]:
    """The metadata of the image-only network: one image in, ``out_channels`` global features out."""
    crop = int(sidecar["preprocessing"]["crop"])
    image = dict(metadata.get("network_data_format", {}).get("inputs", {}).get("image", {}))
    image.update({"num_channels": int(sidecar.get("in_channels", 1)), "spatial_shape": [crop, crop]})
    channels = int(sidecar["out_channels"])
    return {
        **metadata,
        "pred_classes": f"{channels} global image features of the pretrained encoder (the downstream heads' input)",
        "network_data_format": {
            "inputs": {"image": image},
            "outputs": {
                "pred": {
                    "type": "embedding",
                    "format": "global image features",
                    "num_channels": channels,
                    "spatial_shape": [1],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                }
            },
        },
    }


def _metadata(source: dict[str, Any], path: Path, wheel: Path) -> dict[str, Any]:
    """Copied metadata completed with the installed versions (and ``sista-monai`` = the wheel's version)."""
    for key in ("version", "changelog"):
        if key not in source:
            raise _fail(path, f"no {key!r}: the model zoo needs a version and its changelog")
    if not isinstance(source["changelog"], dict) or source["version"] not in source["changelog"]:
        raise _fail(path, f"version {source['version']} has no changelog entry; add one before packaging")
    wheel_version = wheel.name.split("-")[1]
    installed = _installed("sista-monai")
    if installed is not None and installed != wheel_version:
        raise _fail(wheel, f"the source tree is version {wheel_version}, the installed sista-monai {installed}")
    packages = dict(source.get("required_packages_version", {}))
    packages.update(source.pop("optional_packages_version", {}) or {})
    for name in packages:
        packages[name] = _installed(name) or packages[name]
    packages["sista-monai"] = wheel_version
    metadata = dict(source)
    metadata["required_packages_version"] = dict(sorted(packages.items()))
    for key, name in (("monai_version", "monai"), ("pytorch_version", "torch"), ("numpy_version", "numpy")):
        found = _installed(name)
        if found:
            metadata[key] = found.split("+")[0]
    return metadata
