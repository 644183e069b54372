"""Engines: the SISTA trainer (a MONAI SupervisedTrainer whose iteration is one SISTA step), the detection trainer
and evaluator, pretraining inference's batch preparation and inferer, and the optimiser parameter groups."""

from __future__ import annotations

from .detection import DetectionEvaluator, DetectionTrainer, DetectorInferer
from .grounding import (
    CounterfactualEvaluation,
    GroundingInputs,
    GroundingPrepareBatch,
    SISTAGroundingInferer,
    phrase_tokens,
)
from .inference import SISTAAlignmentInferer, SISTAInferencePrepareBatch, pretrain_inference_items
from .optimisation import encoder_parameter_groups
from .retrieval import ReportBank, RetrievalInputs, SISTARetrievalInferer, report_bank_items
from .step import NONFINITE_LOSS_ACTIONS, SafeStep, SafeSupervisedTrainer, finite_on_every_rank
from .trainer import BATCH_KEYS, TARGET_KEYS, SISTAPrepareBatch, SISTATrainer
from .zero_shot import (
    ZERO_SHOT_MODES,
    ZeroShotInferer,
    ZeroShotInputs,
    ZeroShotPrepareBatch,
    prompt_embeddings,
    zero_shot_mode,
    zero_shot_probabilities,
)

__all__ = [
    "BATCH_KEYS",
    "TARGET_KEYS",
    "DetectionEvaluator",
    "DetectionTrainer",
    "DetectorInferer",
    "encoder_parameter_groups",
    "NONFINITE_LOSS_ACTIONS",
    "SafeStep",
    "SafeSupervisedTrainer",
    "finite_on_every_rank",
    "SISTAPrepareBatch",
    "SISTATrainer",
    "SISTAAlignmentInferer",
    "SISTAInferencePrepareBatch",
    "pretrain_inference_items",
    "ZERO_SHOT_MODES",
    "ZeroShotInferer",
    "ZeroShotInputs",
    "ZeroShotPrepareBatch",
    "prompt_embeddings",
    "zero_shot_mode",
    "zero_shot_probabilities",
    "CounterfactualEvaluation",
    "GroundingInputs",
    "GroundingPrepareBatch",
    "SISTAGroundingInferer",
    "phrase_tokens",
    "ReportBank",
    "RetrievalInputs",
    "SISTARetrievalInferer",
    "report_bank_items",
]
