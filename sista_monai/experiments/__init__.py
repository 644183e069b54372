"""Reproducible experiments built from the bundles: ``python -m sista_monai.experiments <name> [options]``.

* :mod:`.ablation`: does each part of SISTA earn its place? Pretraining variants (CLIP only, + SIA, + STA,
  SISTA, SIA modes and similarity sources) and the downstream bundles on each, mean ± std over seeds.
"""
