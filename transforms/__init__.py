"""MONAI transforms for chest radiographs and their reports (installed as ``sista_monai.transforms``)."""

from __future__ import annotations

from .exceptions import ChestXrayReadError, ReportError, SistaDataError
from .io import (
    ChestXray,
    ChestXrayReader,
    LoadChestXray,
    LoadChestXrayd,
    LoadChestXrayD,
    LoadChestXrayDict,
    apply_window,
    dicom_to_display,
    read_chest_xray,
)
from .preprocess import chest_xray_transforms, deterministic_transforms, random_transforms
