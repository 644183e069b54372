"""The SISTA trainer and the batch preparation shared by training, validation and inference.

:class:`SISTATrainer` is MONAI's :class:`~monai.engines.SupervisedTrainer` with its ``_iteration`` replaced
(the pattern of the model-zoo detection bundle's trainer): one iteration encodes the image–report pairs,
computes the report–report similarity, evaluates :class:`~sista_monai.losses.SISTALoss` and steps the
optimiser. Everything else — the Ignite engine, events, handlers, gradient accumulation bookkeeping,
``amp``/``amp_kwargs`` and ``optim_set_to_none`` — is SupervisedTrainer's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents, PrepareBatch
from monai.utils import CommonKeys as Keys
from monai.utils import IgniteInfo, min_version, optional_import

from sista_monai.losses import REPORT_FINDINGS_KEY, ReportSimilarity, finding_label_agreement, report_features

from .step import SafeStep, decollated_scalars

__all__ = ["SISTAPrepareBatch", "SISTATrainer", "BATCH_KEYS", "TARGET_KEYS"]

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

logger = logging.getLogger(__name__)

BATCH_KEYS = (
    "image",
    "input_ids",
    "attention_mask",
    "word_mask",
    "word_start",
    "word_group",
    "labels",
    "report_findings",
    "zone_mask",
    "pointing_mask",
    "lesion_mask",
    "lesion_word",
    "sentence_id",
    "finding_word",
    "finding_side",
    "twin_image",
    "twin_lesion_mask",
)
"""Keys a SISTA batch may carry; ``image``, ``input_ids`` and ``attention_mask`` are required. ``report_findings``
holds the finding vectors read from the report text (:class:`~sista_monai.transforms.ReportFindingsd`), which the
``findings`` report-similarity source compares."""

TARGET_KEYS = (
    "labels",
    "report_findings",
    "zone_mask",
    "pointing_mask",
    "lesion_mask",
    "lesion_word",
    "input_ids",
    "attention_mask",
    "word_start",
    "sentence_id",
)
"""Ground truth handed to evaluation metrics as the evaluator's ``label`` (the token ids tell identical report
texts apart for the retrieval metrics; ``report_findings`` feeds the ``findings`` source of the SIA flag metric)."""


class SISTAPrepareBatch(PrepareBatch):
    """Move a SISTA batch to the device.

    Called by :class:`SISTATrainer` it returns a dict of tensors. Called by MONAI's
    :class:`~monai.engines.SupervisedEvaluator` (``as_supervised=True``) it returns
    ``(image, targets, (input_ids, attention_mask, word_mask, word_start), {})`` so that the evaluator runs
    ``network(image, input_ids, attention_mask, word_mask, word_start)``.

    Args:
        as_supervised: return the evaluator's tuple instead of a dict.
    """

    def __init__(self, as_supervised: bool = False) -> None:
        self.as_supervised = as_supervised

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> Any:
        missing = [k for k in ("image", "input_ids", "attention_mask") if k not in batchdata]
        if missing:
            raise KeyError(f"SISTA batch is missing {missing}; it has {sorted(batchdata)}")
        batch = {
            key: torch.as_tensor(batchdata[key]).to(device=device, non_blocking=non_blocking, **kwargs)
            for key in BATCH_KEYS
            if key in batchdata and batchdata[key] is not None
        }
        for key in ("word_mask", "pointing_mask"):
            if key in batch:
                batch[key] = batch[key].bool()
        if not self.as_supervised:
            return batch
        text = (batch["input_ids"], batch["attention_mask"], batch.get("word_mask"), batch.get("word_start"))
        targets = {key: batch[key] for key in TARGET_KEYS if key in batch}
        return batch["image"], targets, text, {}


class SISTATrainer(SafeStep, SupervisedTrainer):
    """SupervisedTrainer whose iteration is one SISTA step, stepped by :class:`~sista_monai.engines.step.SafeStep`.

    The constructor takes SupervisedTrainer's arguments (``loss_function`` is a
    :class:`~sista_monai.losses.SISTALoss`, ``network`` a :class:`~sista_monai.networks.SISTAModel` or its
    DDP wrapper; a learnable SIA temperature is the model's, which returns it for the loss), plus:

    Args:
        report_similarity: computes ``report_sim`` for SIA from the source it was built with:
            ``text_frozen`` (the model's frozen text copy), ``text_online`` (the current report embeddings),
            ``labels`` (the batch's ``labels``) or ``findings`` (the batch's ``report_findings``, read from the report
            text by :class:`~sista_monai.transforms.ReportFindingsd`).
        scheduler: a learning-rate scheduler stepped after every optimiser step (so warm-up and cosine
            schedules count optimiser steps, also under gradient accumulation).
        grad_clip_norm: clip the global gradient norm to this value before each step (``None``: no clipping).
        nonfinite_loss: ``"raise"`` (default) stops with :class:`NonFiniteLossError` naming the iteration and
            every term before anything is stepped or saved; ``"skip"`` logs the same message, leaves the
            batch out (under accumulation, only that micro-batch: see :class:`~sista_monai.engines.step.SafeStep`)
            and continues. Under ``torchrun`` the ranks agree (a non-finite loss on one rank
            raises or skips on all), so no rank is left waiting in the gradient all-reduce.
        kwargs: :class:`~monai.engines.SupervisedTrainer` arguments. ``amp=True`` with
            ``amp_kwargs={"dtype": torch.bfloat16}`` (default when no dtype is given) or ``torch.float16``
            runs the forward pass under ``torch.autocast`` on the engine's device type (CPU included); the
            loss is computed in float32; float16 on CUDA uses MONAI's gradient scaler.
    """

    def __init__(
        self,
        *args: Any,
        report_similarity: ReportSimilarity | None = None,
        scheduler: Any = None,
        grad_clip_norm: float | None = None,
        nonfinite_loss: str = "raise",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("prepare_batch", SISTAPrepareBatch())
        kwargs.setdefault("decollate", False)
        super().__init__(*args, **kwargs)
        self._init_safe_step(self, scheduler, grad_clip_norm, nonfinite_loss)
        self.report_similarity = report_similarity or ReportSimilarity("text_online")
        self.amp_kwargs.setdefault("dtype", torch.bfloat16)
        self.state.rows_without_negatives = 0
        self.add_event_handler(Events.EPOCH_STARTED, self._reset_epoch_counts)
        self.add_event_handler(Events.EPOCH_COMPLETED, self._warn_rows_without_negatives)

    @staticmethod
    def _reset_epoch_counts(engine: SISTATrainer) -> None:
        engine.state.rows_without_negatives = 0

    @staticmethod
    def _warn_rows_without_negatives(engine: SISTATrainer) -> None:
        """Say once per epoch how many SIA anchors had every unpaired report flagged (the guard then acted)."""
        count = engine.state.rows_without_negatives
        if count:
            guard = getattr(getattr(engine.loss_function, "sia", None), "min_negatives", 0)
            action = (
                f"the least similar flagged reports were kept as their negatives (min_negatives={guard})"
                if guard
                else "their SIA term was 0 with no gradient (min_negatives=0)"
            )
            logger.warning(
                "epoch %d: %d SIA anchors had every unpaired report in the batch flagged as a false negative; %s. "
                "Lower the flag rate (a higher sia_threshold, a centred report similarity) if this persists.",
                engine.state.epoch,
                count,
                action,
            )

    def _iteration(self, engine: SupervisedTrainer, batchdata: dict[str, Any]) -> list[dict[str, Any]]:  # type: ignore[override]
        """One SISTA step; ``engine.state.output`` is MONAI's decollated form: one dict per sample, each holding every
        scalar loss term, diagnostic and ``lr`` as a number (:func:`~sista_monai.engines.step.decollated_scalars`)."""
        if not isinstance(engine, SISTATrainer):
            raise TypeError(f"a SISTATrainer iterates itself as the engine, got {type(engine).__name__}")
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        zero_grad, step = self._accumulation(engine)
        engine.network.train()
        if zero_grad:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)

        with self._autocast(engine):
            pred = engine.network(
                batch["image"],
                batch["input_ids"],
                batch["attention_mask"],
                batch.get("word_mask"),
                batch.get("word_start"),
            )
        engine.state.output = {Keys.IMAGE: batch["image"], Keys.PRED: pred}
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)

        features = report_features(
            engine.report_similarity.source, pred, batch.get("labels"), findings=batch.get(REPORT_FINDINGS_KEY)
        )
        report_sim = engine.report_similarity(features.float())
        agreement = finding_label_agreement(batch["labels"]) if "labels" in batch else None
        terms = engine.loss_function(
            image_emb=pred.image_emb.float(),
            text_emb=pred.text_emb.float(),
            report_sim=report_sim,
            patch_emb=pred.patch_emb.float(),
            token_emb=pred.token_emb.float(),
            token_mask=pred.token_mask,
            token_groups=batch.get("word_group"),
            content_words=batch.get("finding_word"),
            content_sides=batch.get("finding_side"),
            label_agreement=agreement,
            temperature=None if pred.temperature is None else pred.temperature.float(),
        )
        loss = terms["loss"]
        engine.fire_event(IterationEvents.LOSS_COMPLETED)

        self._optimise(engine, loss, terms, "SISTA loss", step)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)

        if "rows_without_negatives" in terms:
            engine.state.rows_without_negatives += int(terms["rows_without_negatives"])
        scalars = {**terms, Keys.LOSS: loss, "lr": float(engine.optimizer.param_groups[0]["lr"])}
        output = decollated_scalars(scalars, batch["image"].shape[0])
        engine.state.output = output
        return output
