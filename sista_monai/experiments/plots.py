"""The ablation's plots: each downstream metric per variant and fraction, the θ sweep and the σ sweep (PNG)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sista_monai.experiments.effects import _mean_std
from sista_monai.experiments.variants import TASK_METRICS, Fractions, _pairs

__all__ = ["SIGMA_VARIANTS"]


SIGMA_VARIANTS = {
    "sista_dense": 0.0,
    "sista_sigma_1p": 1 / 64,
    "sista_sigma_0.25": 0.25,
    "sista": 0.5,
    "sista_sigma_0.75": 0.75,
}
"""σ of each variant of the σ sweep (``sista`` runs the bundle default, 0.5)."""


def _sigma_plot(results: Mapping[str, Any], out: Path) -> Path | None:
    import matplotlib.pyplot as plt

    points = [
        (sigma, results["variants"][name]["pretrain"])
        for name, sigma in SIGMA_VARIANTS.items()
        if name in results["variants"]
    ]
    if len(points) < 2:
        return None
    points.sort(key=lambda point: point[0])
    figure, (ground_axis, kept_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    sigmas = [sigma for sigma, _ in points]
    for key, label in (
        ("lesion", "lesion grounding"),
        ("lesion_prior", "image-free prior"),
        ("zone", "zone grounding"),
    ):
        stats = [_mean_std(values.get(key, [])) for _, values in points]
        ground_axis.errorbar(
            sigmas, [m for m, _, _ in stats], yerr=[sd for _, sd, _ in stats], marker="o", capsize=3, label=label
        )
    kept = [_mean_std(values.get("patches_kept", [])) for _, values in points]
    kept_axis.errorbar(sigmas, [m for m, _, _ in kept], yerr=[sd for _, sd, _ in kept], marker="o", capsize=3)
    ground_axis.set(xlabel="σ", ylabel="pointing accuracy (test)")
    ground_axis.legend()
    kept_axis.set(xlabel="σ", ylabel="STA patches kept", ylim=(0, 1.05))
    figure.tight_layout()
    path = out / "sigma_sweep.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _plots(results: Mapping[str, Any], tasks: Sequence[str], fractions: Fractions, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    names = list(results["variants"])
    for task in tasks:
        figure, axis = plt.subplots(figsize=(8, 3.5))
        shown = [fraction for t, fraction in _pairs([task], fractions)]
        width = 0.8 / max(len(shown), 1)
        for k, fraction in enumerate(shown):
            stats = [_mean_std(results["variants"][n].get(task, {}).get(str(fraction), [])) for n in names]
            axis.bar(
                [i + k * width for i in range(len(names))],
                [s[0] for s in stats],
                width,
                yerr=[s[1] for s in stats],
                label=f"{fraction} % labels",
                capsize=3,
            )
        axis.set_xticks([i + width * (len(shown) - 1) / 2 for i in range(len(names))], names, rotation=30, ha="right")
        axis.set_ylabel(TASK_METRICS[task][1])
        axis.legend()
        figure.tight_layout()
        path = out / f"plot_{TASK_METRICS[task][0]}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    if results.get("theta_sweep"):
        figure, (rate_axis, precision_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
        for source, points in results["theta_sweep"].items():
            thetas = [p["theta"] for p in points]
            rate_axis.plot(thetas, [p["flag_rate"] for p in points], marker=".", label=source)
            precision_axis.plot(thetas, [p["flag_precision"] for p in points], marker=".", label=source)
        rate_axis.set(xlabel="θ", ylabel="flag rate (share of off-diagonal pairs)", yscale="log")
        precision_axis.set(xlabel="θ", ylabel="flag precision (same findings)", ylim=(0, 1.05))
        precision_axis.legend()
        figure.tight_layout()
        path = out / "theta_sweep.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    sigma = _sigma_plot(results, out)
    if sigma is not None:
        written.append(sigma)
    return written
