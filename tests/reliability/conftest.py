"""Fixtures for the reliability tests: the bundle tests' tiny demo dataset (40 studies, 64 pixels, planted PHI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sista_monai.data.demo import ensure_demo_data


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-study, 64-pixel demo dataset with planted fake PHI, as tests/bundles/conftest.py makes it."""
    return ensure_demo_data(tmp_path_factory.mktemp("data") / "demo", n=40, size=64, seed=0, plant_phi=True)
