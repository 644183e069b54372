"""``python -m sista_monai.experiments <name> [options]``; each experiment module exposes ``main(argv) -> int``."""

from __future__ import annotations

import importlib
import sys

EXPERIMENTS = {
    "ablation": "pretraining variants x downstream bundles at few labels, mean ± std over seeds, with plots",
    "compare": "a downstream bundle with the pretrained encoder vs random initialisation, over fractions and seeds",
    "patch_probe": "oracle diagnostic: do the pretrained patch features locate lesions? (counterfactual twins)",
    "report_similarity": "SIA's report-similarity sources scored against human truth (IU X-ray MeSH, demo labels)",
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch to one experiment module."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in EXPERIMENTS:
        sys.stdout.write("usage: python -m sista_monai.experiments {" + "|".join(EXPERIMENTS) + "} [options]\n")
        sys.stdout.write("\n".join(f"  {name:17s} {what}" for name, what in EXPERIMENTS.items()) + "\n")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(f"sista_monai.experiments.{argv[0]}")
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
