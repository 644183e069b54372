"""``python -m sista_monai.package BUNDLE_DIR --out DIR``: runs :func:`sista_monai.package.cli.main`."""

from __future__ import annotations

import sys

from sista_monai.package.cli import main

if __name__ == "__main__":
    sys.exit(main())
