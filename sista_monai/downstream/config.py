"""Re-export of :func:`sista_monai.config.as_flag` for the downstream bundles' configs."""

from __future__ import annotations

from sista_monai.config import as_flag

__all__ = ["as_flag"]
