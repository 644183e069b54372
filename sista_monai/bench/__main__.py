"""``python -m sista_monai.bench <name> [options]``: benchmarks printed as ratios against a baseline run alongside.

Each benchmark lives in ``sista_monai.bench.<name>`` and exposes ``main(argv) -> int``.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "data": "decode + resize of DICOMs vs plain pydicom; persistent-cache speed-up",
    "loss": "SIA + STA forward/backward vs a per-sample loop; share of an encoder step",
    "step": "one SISTATrainer iteration vs a hand-written PyTorch loop",
    "gpu": "paper-scale SISTA step vs CLIP-only step and the loss alone: images/s, peak memory, loss share",
    "gloo_exit": "exit aborts of two-process gloo runs: plain final barrier vs finish_process_group",
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch to one benchmark module."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHMARKS:
        lines = [f"  {name:9s} {what}" for name, what in BENCHMARKS.items()]
        sys.stdout.write("usage: python -m sista_monai.bench {" + "|".join(BENCHMARKS) + "} [--json] [...]\n")
        sys.stdout.write("\n".join(lines) + "\n")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        module = importlib.import_module(f"sista_monai.bench.{argv[0]}")
    except ModuleNotFoundError as err:
        sys.stderr.write(f"benchmark {argv[0]!r} is not available in this version: {err}\n")
        return 2
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
