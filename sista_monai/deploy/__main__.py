"""``python -m sista_monai.deploy {classification,segmentation,detection} -i DICOM_FOLDER -o OUT -m MODEL_TS``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

TASK_HELP = {
    "classification": "RSNA pneumonia classification: <name>.json + <name>_sr.dcm (DICOM SR) per image",
    "segmentation": "SIIM pneumothorax segmentation: <name>_seg.dcm (DICOM SEG) per image",
    "detection": "RSNA pneumonia detection: <name>.json (boxes in the image's pixels) + <name>_sr.dcm per image",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sista_monai.deploy",
        description="Run a downstream bundle's exported model.ts as a MONAI Deploy application on a DICOM folder.",
    )
    parser.add_argument("task", choices=sorted(TASK_HELP), help="; ".join(f"{k}: {v}" for k, v in TASK_HELP.items()))
    parser.add_argument("-i", "--input", required=True, type=Path, help="folder of DICOM files (nested folders read)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder (created)")
    parser.add_argument("-m", "--model", required=True, type=Path, help="the bundle's models/model.ts (ckpt_export)")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log level of the application and the SDK (default WARNING: the SDK logs study and series UIDs at INFO)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the application; returns the exit status: 0, 1 when some input files could not be processed (listed in
    ``OUT/errors.json``; every other instance has its outputs), 2 for a bad argument."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.input.is_dir():
        parser.error(f"--input {args.input}: not a folder")
    if not args.model.is_file():
        parser.error(f"--model {args.model}: no such file (export it with the bundle's ckpt_export command)")
    os.environ.setdefault("HOLOSCAN_LOG_LEVEL", "ERROR" if args.log_level != "DEBUG" else "DEBUG")
    from .apps import ChestXrayApp  # the SDK and Holoscan load here, after the arguments are checked

    args.output.mkdir(parents=True, exist_ok=True)
    app = ChestXrayApp(
        args.task, args.input, args.output, args.model, log_level=args.log_level.replace("WARNING", "WARN")
    )
    try:
        app.run()
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{app.instances_found} DICOM image instance(s) processed; results in {args.output}", file=sys.stderr)
    if app.errors:
        print(
            f"{len(app.errors)} input file(s) could not be processed; each is listed with its reason in "
            f"{args.output / 'errors.json'}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
