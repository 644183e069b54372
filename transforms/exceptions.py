"""Exceptions raised by the chest X-ray and report transforms.

Every failure to read an image or a report surfaces as one of these types, with a message that names
the file (or datalist item) and the reason, so that a pipeline can report all bad items at once instead of
failing on a bare library traceback. Messages never contain header values or report text.
"""

from __future__ import annotations

__all__ = ["SistaDataError", "ChestXrayReadError", "ReportError"]


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
