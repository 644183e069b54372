"""Engines: the SISTA trainer (a MONAI SupervisedTrainer whose iteration is one SISTA step) and its reports."""

from __future__ import annotations

from .evaluation import TARGETS, summarise_test_metrics, write_test_report
from .inference import image_files, run_pretrain_inference
from .trainer import BATCH_KEYS, TARGET_KEYS, NonFiniteLossError, SISTAPrepareBatch, SISTATrainer

__all__ = [
    "BATCH_KEYS",
    "TARGET_KEYS",
    "TARGETS",
    "NonFiniteLossError",
    "SISTAPrepareBatch",
    "SISTATrainer",
    "summarise_test_metrics",
    "write_test_report",
    "image_files",
    "run_pretrain_inference",
]
