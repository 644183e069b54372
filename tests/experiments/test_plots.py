"""The ablation's plots: the σ sweep needs two σ."""

from __future__ import annotations

from pathlib import Path


def test_sigma_sweep_plot_needs_two_sigmas(tmp_path: Path) -> None:
    from sista_monai.experiments.plots import _sigma_plot

    one = {
        "variants": {
            "sista": {"pretrain": {"lesion": [0.2], "lesion_prior": [0.4], "zone": [0.1], "patches_kept": [0.5]}}
        }
    }
    assert _sigma_plot(one, tmp_path) is None
    two = {
        "variants": {**one["variants"], "sista_dense": {"pretrain": {"lesion": [0.1, 0.2], "patches_kept": [1.0, 1.0]}}}
    }
    path = _sigma_plot(two, tmp_path)
    assert path == tmp_path / "sigma_sweep.png" and path.read_bytes()[:4] == b"\x89PNG"
