"""``python -m sista_monai.data.demo``: generate the synthetic demo data (see :func:`.generate.main`)."""

import sys

from .generate import main

sys.exit(main())
