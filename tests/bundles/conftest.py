"""Fixtures for bundle tests: a tiny demo dataset with planted fake PHI."""

from __future__ import annotations

from pathlib import Path

import pytest

from sista_monai.data.demo import ensure_demo_data


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-study, 64-pixel demo dataset with planted fake PHI (shared by the bundle tests)."""
    return ensure_demo_data(tmp_path_factory.mktemp("data") / "demo", n=40, size=64, seed=0, plant_phi=True)
