"""The command line ``python -m sista_monai.package BUNDLE_DIR --out DIR``: one JSON summary, or one error line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from sista_monai.errors import BundlePackagingError
from sista_monai.package.assemble import package_bundle
from sista_monai.package.rules import SIZE_LIMIT_MB

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sista_monai.package",
        description=(
            "Write a self-contained copy of a bundle (bundles/pretrain or a downstream bundle) that the MONAI Model "
            "Zoo checks accept: models/model.pt (+ model.ts where TorchScript applies), standalone configs, "
            "completed metadata, large_files.yml, docs/data_license.txt and a wheel of sista-monai."
        ),
        epilog="example: python -m sista_monai.package bundles/rsna_pneumonia_classification --out dist/rsna_cls",
    )
    parser.add_argument("bundle_dir", help="the bundle folder (configs/, models/, docs/, LICENSE)")
    parser.add_argument("--out", required=True, help="the output folder (must not exist or be empty)")
    parser.add_argument(
        "--layer",
        action="append",
        default=[],
        metavar="FILE",
        help="an override file the weights were trained with (e.g. configs/paper.json), merged into inference.json",
    )
    parser.add_argument(
        "--pretrained-encoder",
        metavar="PT",
        help="downstream bundles: ship this image_encoder.pt (+ sidecar) in models/ for retraining",
    )
    parser.add_argument(
        "--size-limit-mb",
        type=float,
        default=SIZE_LIMIT_MB,
        help="per-file limit; larger files go to large_files.yml (default: %(default)s, the model zoo's)",
    )
    parser.add_argument("--large-file-url", metavar="URL", help="URL prefix where the large files will be uploaded")
    parser.add_argument("--project", metavar="DIR", help="the sista-monai source tree to build the wheel from")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument(
        "--tokenizer",
        metavar="DIR",
        help="bundles/pretrain: the tokenizer folder the text encoder was trained with (default: data/demo/tokenizer)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (0: packaged, 1: a packaging error, printed as one message)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        summary = package_bundle(
            args.bundle_dir,
            args.out,
            layers=args.layer,
            pretrained_encoder=args.pretrained_encoder,
            size_limit_mb=args.size_limit_mb,
            large_file_url=args.large_file_url,
            project=args.project,
            overwrite=args.overwrite,
            tokenizer=args.tokenizer,
        )
    except BundlePackagingError as err:
        print(f"python -m sista_monai.package: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0
