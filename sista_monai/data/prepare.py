"""Turn the public chest X-ray datasets into MONAI datalists (one command per dataset).

Commands (``--out`` receives the datalists; see ``data/README.md`` for where to obtain each dataset)::

    python -m sista_monai.data.prepare rsna --labels stage_2_train_labels.csv --images stage_2_train_images \\
        --out data/rsna [--splits DIR | --split-seed N] [--on-error raise|skip]
    python -m sista_monai.data.prepare siim --rle train-rle.csv --images dicom-images-train --out data/siim \\
        [--rle-format auto|stage1|stage2] [--splits DIR | --split-seed N] [--on-error raise|skip]
    python -m sista_monai.data.prepare mimic-cxr --root mimic-cxr-jpg/2.1.0 [--reports mimic-cxr/2.1.0] \\
        [--metadata mimic-cxr-2.0.0-metadata.csv] [--split mimic-cxr-2.0.0-split.csv] \\
        [--chexpert mimic-cxr-2.0.0-chexpert.csv] [--views PA,AP|all] [--uncertain ones|zeros] --out data/mimic
    python -m sista_monai.data.prepare iu-xray --reports ecgen-radiology [--images png] --out data/iu_xray

Outputs (paths inside a datalist are relative to its folder when under ``--out``, else absolute):

* ``rsna``: ``datalist_classification.json`` (``label`` = Target) and ``datalist_detection.json`` (every box
  of a patient, ``[x, y, width, height]`` in DICOM pixels as the CSV gives them, ``box_mode`` ``"xywh"``),
  both from ONE patient-level split, each with the nested ``training_1``/``training_10`` subsets, plus
  ``datalist_{classification,detection}_{1,10}pct.json`` whose ``training`` is the subset.
* ``siim``: ``datalist_segmentation.json`` (+ ``_1pct``/``_10pct``) and ``masks/<ImageId>.png`` (uint8 0/1,
  DICOM ``(Rows, Columns)``, all RLE rows of an image merged).
* ``mimic-cxr`` and ``iu-xray``: ``datalist_pretrain.json`` (report = IMPRESSION + FINDINGS, cleaned).
* every command: ``prepare_report.json`` (counts, split source, drops per reason) and ``skipped.json``.

Splits: RSNA and SIIM use the released split files (``data/splits``, installed with the package and found by
:func:`~sista_monai.data.splits.default_splits_dir`; SHA-256 verified) unless
``--split-seed`` asks for a fresh seeded split. A labels CSV that covers only part of the released ids (a
sample) keeps the released assignment of the ids it has, and the label fractions are the released ones
intersected with those ids; an id absent from the released split is a problem.

Input problems (missing image files, malformed rows, duplicate or contradictory rows, RLE past the image)
are all collected first and reported together, naming the file, the 1-based CSV row (the header is row 1)
and the item; nothing is written then. ``--on-error skip`` drops the affected items instead and lists them
with their reasons in ``skipped.json``. The command line prints the problems and exits with status 2.

This module is the command line only; each dataset's reading and preparation lives in
:mod:`sista_monai.data.sources` (``rsna``, ``siim``, ``mimic_cxr``, ``iu_xray``; CSV reading in ``tables``,
the Kaggle label files in ``kaggle``, the shared steps in ``common``), re-exported here under their
established names.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from sista_monai.errors import SistaDataError

from .rle import RLE_FORMATS
from .sources.common import ON_ERROR
from .sources.iu_xray import prepare_iu_xray
from .sources.kaggle import RSNA_COLUMNS, SIIM_COLUMNS, RsnaPatient, SiimImage, read_rsna_labels, read_siim_rle
from .sources.mimic_cxr import MIMIC_SPLIT_NAMES, prepare_mimic_cxr
from .sources.rsna import prepare_rsna
from .sources.siim import prepare_siim
from .sources.tables import open_csv_text, read_csv_table

__all__ = [
    "ON_ERROR",
    "RSNA_COLUMNS",
    "SIIM_COLUMNS",
    "MIMIC_SPLIT_NAMES",
    "RsnaPatient",
    "SiimImage",
    "open_csv_text",
    "read_csv_table",
    "read_rsna_labels",
    "read_siim_rle",
    "prepare_rsna",
    "prepare_siim",
    "prepare_mimic_cxr",
    "prepare_iu_xray",
    "build_parser",
    "main",
]


def _views(value: str) -> tuple[str, ...] | None:
    if value.strip().lower() == "all":
        return None
    views = tuple(part.strip().upper() for part in value.split(",") if part.strip())
    if not views:
        raise argparse.ArgumentTypeError("give view positions such as PA,AP, or all")
    return views


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m sista_monai.data.prepare`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m sista_monai.data.prepare",
        description="Turn a public chest X-ray dataset into MONAI datalists (see data/README.md).",
    )
    commands = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--out", required=True, type=Path, help="output folder")
        sub.add_argument(
            "--on-error",
            choices=ON_ERROR,
            default="raise",
            help="raise: report every problem and write nothing (default); skip: drop bad items into skipped.json",
        )
        sub.add_argument("-v", "--verbose", action="store_true", help="log progress and counts")

    def split_options(sub: argparse.ArgumentParser) -> None:
        group = sub.add_mutually_exclusive_group()
        group.add_argument(
            "--splits",
            type=Path,
            help="released split folder (default: the splits installed with the package, data/splits)",
        )
        group.add_argument("--split-seed", type=int, help="draw a fresh stratified 70/15/15 split with this seed")

    rsna = commands.add_parser("rsna", help="RSNA Pneumonia: classification + detection datalists")
    rsna.add_argument("--labels", required=True, type=Path, help="stage_2_train_labels.csv[.zip|.gz]")
    rsna.add_argument("--images", required=True, type=Path, help="folder of <patientId>.dcm")
    split_options(rsna)
    common(rsna)

    siim = commands.add_parser("siim", help="SIIM-ACR Pneumothorax: segmentation datalist + masks")
    siim.add_argument("--rle", required=True, type=Path, help="train-rle.csv[.zip|.gz]")
    siim.add_argument("--images", required=True, type=Path, help="folder searched recursively for <ImageId>.dcm")
    siim.add_argument("--rle-format", choices=("auto", *RLE_FORMATS), default="auto", help="RLE start convention")
    split_options(siim)
    common(siim)

    mimic = commands.add_parser("mimic-cxr", help="MIMIC-CXR / MIMIC-CXR-JPG: pretraining datalist")
    mimic.add_argument("--root", required=True, type=Path, help="release folder holding files/pXX/...")
    mimic.add_argument("--reports", type=Path, help="folder holding files/pXX/pSUBJECT/sSTUDY.txt (default: --root)")
    mimic.add_argument("--metadata", type=Path, help="mimic-cxr-2.0.0-metadata.csv[.gz]")
    mimic.add_argument(
        "--split", type=Path, help="mimic-cxr-2.0.0-split.csv[.gz] (default: seeded 98/1/1 split by subject)"
    )
    mimic.add_argument("--chexpert", type=Path, help="mimic-cxr-2.0.0-chexpert.csv[.gz] for the labels vector")
    mimic.add_argument(
        "--views", type=_views, default=("PA", "AP"), help="ViewPosition values kept (default PA,AP; or 'all')"
    )
    mimic.add_argument("--uncertain", choices=("ones", "zeros"), default="ones", help="CheXpert -1 becomes 1 or 0")
    mimic.add_argument("--split-seed", type=int, default=0, help="seed of the subject split without --split")
    common(mimic)

    iu = commands.add_parser("iu-xray", help="IU X-ray (OpenI): pretraining datalist")
    iu.add_argument("--reports", required=True, type=Path, help="folder of report XMLs (ecgen-radiology)")
    iu.add_argument("--images", type=Path, help="folder of <image id>.png (omit for a text-only datalist)")
    iu.add_argument("--split-seed", type=int, default=0, help="seed of the 70/15/15 report split")
    common(iu)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns 2 (after printing every problem) when the inputs are unusable."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        if args.dataset == "rsna":
            report = prepare_rsna(
                args.labels,
                args.images,
                args.out,
                splits_dir=args.splits,
                split_seed=args.split_seed,
                on_error=args.on_error,
            )
        elif args.dataset == "siim":
            report = prepare_siim(
                args.rle,
                args.images,
                args.out,
                rle_format=args.rle_format,
                splits_dir=args.splits,
                split_seed=args.split_seed,
                on_error=args.on_error,
            )
        elif args.dataset == "mimic-cxr":
            report = prepare_mimic_cxr(
                args.root,
                args.out,
                reports=args.reports,
                metadata=args.metadata,
                split=args.split,
                chexpert=args.chexpert,
                views=args.views,
                uncertain=args.uncertain,
                split_seed=args.split_seed,
                on_error=args.on_error,
            )
        else:
            report = prepare_iu_xray(
                args.reports, args.out, images=args.images, split_seed=args.split_seed, on_error=args.on_error
            )
    except SistaDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.dataset}: wrote {', '.join(report['files'])} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
