"""Every exception type of the project, in one place.

Data errors derive from :class:`SistaDataError` (a ``ValueError``): each names the file, row or datalist item it
is about and a short reason, never header values or report text, so that a pipeline reports all bad items at
once instead of failing on a bare library traceback. Numerical failures derive from ``FloatingPointError``.
This module imports nothing heavy (no torch, MONAI or pydicom), so light modules can raise these types.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

__all__ = [
    "SistaDataError",
    "ChestXrayReadError",
    "ReportError",
    "DatasetPreparationError",
    "DatalistSchemaError",
    "BadItemsError",
    "SplitError",
    "RLEError",
    "EncoderMismatchError",
    "NonFiniteWeightsError",
    "NonFiniteLossError",
    "NetworkAccessError",
    "BundlePackagingError",
]


class SistaDataError(ValueError):
    """Base class of the project's data errors.

    Args:
        source: the file path or datalist item identifier the error is about.
        reason: a short, PHI-free explanation of what is wrong.
    """

    def __init__(self, source: object, reason: str) -> None:
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")

    def __reduce__(self):
        return (self.__class__, (self.source, self.reason))


class ChestXrayReadError(SistaDataError):
    """A chest radiograph (DICOM, PNG or JPEG) that cannot be turned into a valid image."""


class ReportError(SistaDataError):
    """A report that cannot be parsed, decoded or that is empty after cleaning."""


class DatasetPreparationError(SistaDataError):
    """Preparation found problems in its inputs; the message lists every one of them.

    Args:
        source: what was being prepared (e.g. ``"prepare rsna"``).
        problems: everything found wrong; ``str(error)`` lists them all, one per line.

    Attributes:
        problems: the :class:`Problem` records.
    """

    def __init__(self, source: object, problems: Sequence[Any] | str) -> None:
        if isinstance(problems, str):
            self.problems: tuple[Any, ...] = ()
            reason = problems
        else:
            self.problems = tuple(problems)
            count = len(self.problems)
            lines = "\n".join(f"  - {problem}" for problem in self.problems)
            reason = (
                f"{count} problem{'s' if count != 1 else ''} found; nothing was written "
                f"(rows are 1-based CSV rows, the header is row 1):\n{lines}"
            )
        super().__init__(source, reason)

    def __reduce__(self):
        return (self.__class__, (self.source, self.problems or self.reason))


class DatalistSchemaError(SistaDataError):
    """A datalist that does not follow its schema; the reason lists every violation."""


class BadItemsError(SistaDataError):
    """The datalists hold bad items; the message lists every one of them.

    Args:
        source: the datalist the items came from.
        problems: everything found wrong, or a ready-made reason.
        checked: how many items were checked.
        skip_option: the config key that skips bad items instead, named in the message.
        record: where a skipping run records the skipped items, named in the message.

    Attributes:
        problems: the :class:`BadItem` records.
    """

    def __init__(
        self,
        source: object,
        problems: Sequence[Any] | str,
        checked: int = 0,
        skip_option: str = "skip_bad_items",
        record: str | os.PathLike | None = None,
    ) -> None:
        self.checked = checked
        self.skip_option = skip_option
        self.record = os.fspath(record) if record is not None else None
        if isinstance(problems, str):
            self.problems: tuple[Any, ...] = ()
            reason = problems
        else:
            self.problems = tuple(problems)
            items = len({(p.split, p.index) for p in self.problems})
            lines = "\n".join(f"  - {problem}" for problem in self.problems)
            recorded = f" and record these in {self.record}" if self.record is not None else ""
            reason = (
                f"{items} of {checked} items are bad ({len(self.problems)} problems); the run stopped before "
                f"training. Fix them, or set {skip_option} to true to train on the other {checked - items} "
                f"items{recorded}:\n{lines}"
            )
        super().__init__(source, reason)

    def __reduce__(self):
        return (
            self.__class__,
            (self.source, self.problems or self.reason, self.checked, self.skip_option, self.record),
        )


class SplitError(SistaDataError):
    """Split files that are missing, damaged (checksum mismatch) or inconsistent."""


class RLEError(SistaDataError):
    """An RLE string that is malformed or does not fit its image (the source names the file and row)."""


class EncoderMismatchError(ValueError):
    """A pretrained encoder file that does not fit the configured downstream network or preprocessing."""


class NonFiniteWeightsError(FloatingPointError):
    """A state to be saved holds NaN or infinite values; the message names the file and the first entries."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the iteration and the value of every term."""


class NetworkAccessError(ConnectionRefusedError):
    """A connection beyond this machine was attempted while the network guard was installed."""


class BundlePackagingError(ValueError):
    """A bundle cannot be packaged for the model zoo (``python -m sista_monai.package``).

    Args:
        source: the file (or folder) the problem is about.
        reason: what is wrong and, where there is one, what to do.
    """

    def __init__(self, source: object, reason: str) -> None:
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")

    def __reduce__(self):
        return (self.__class__, (self.source, self.reason))
