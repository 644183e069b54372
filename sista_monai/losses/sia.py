"""SIA: semantics-aware instance alignment, an image–report InfoNCE without false negatives (METHOD.md §1)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from sista_monai.distributed import world_info
from sista_monai.losses.distributed import gather_with_grad

__all__ = ["SemanticInstanceAlignmentLoss", "SIA_MODES", "false_negative_flags"]

SIA_MODES = ("eliminate", "positive", "soft")


def false_negative_flags(report_sim: torch.Tensor, threshold: float, first_column: int = 0) -> torch.Tensor:
    """The SIA false-negative mask ``F_ij = (R_ij >= threshold) and j is not i's own report`` (METHOD.md §1).

    Args:
        report_sim: ``(N, M)`` report–report similarity ``R``: rows are anchors, columns candidate reports.
        threshold: ``theta``.
        first_column: the column of row 0's own report; row ``i``'s is ``first_column + i`` (``rank * B`` for the
            local rows of a rank against the gathered columns, 0 for a square matrix).

    Returns:
        ``(N, M)`` boolean flags; a row's own report is never flagged.
    """
    rows, columns = report_sim.shape
    own = torch.arange(columns, device=report_sim.device)[None, :] == (
        torch.arange(rows, device=report_sim.device)[:, None] + first_column
    )
    return (report_sim >= threshold) & ~own


class SemanticInstanceAlignmentLoss(nn.Module):
    """Symmetric image–report InfoNCE in which unpaired reports similar to the anchor's are not negatives.

    With L2-normalised image embeddings ``v`` and report embeddings ``t`` the logits are
    ``s_ij = <v_i, t_j> / tau``. A pair ``(i, j)``, ``j != i``, is a *false negative* (flagged) when the
    report–report similarity ``R_ij >= threshold`` (:func:`false_negative_flags`). The image→report term uses the
    rows of ``s``, the report→image term its columns, and the loss is their mean. Modes:

    - ``"eliminate"`` (default): flagged pairs are dropped from both softmax denominators,
      ``L_i = -log(exp(s_ii) / sum_{j not flagged} exp(s_ij))``.
    - ``"positive"``: flagged pairs are extra positives; multi-positive InfoNCE (the denominator covers the whole
      row) averaged over the positives ``{i} ∪ {j flagged}``.
    - ``"soft"``: cross-entropy against soft targets ``q_ij ∝ exp(R_ij / soft_temperature)`` over the candidates
      ``{i} ∪ {j flagged}`` (zero elsewhere). ``threshold`` therefore still selects which pairs may share target
      mass; set it to ``-inf`` (or any value <= -1) for targets ``softmax(R_i / soft_temperature)`` over the
      whole row.

    With ``threshold`` above every off-diagonal ``R_ij`` nothing is flagged and every mode equals the standard
    symmetric CLIP loss exactly.

    ``report_sim`` is read as a symmetric relation ("report i resembles report j"): the report→image term of
    report ``j`` uses row ``j`` of ``report_sim`` (not column ``j``), which is what makes the distributed form
    possible, where each rank only holds its own rows. Cosine similarities (:class:`ReportSimilarity`) are
    symmetric.

    Distributed: when ``torch.distributed`` is initialised with ``world > 1`` (and ``gather_distributed``), the
    loss gathers ``v`` and ``t`` from all ranks with gradient; each rank computes its ``B`` rows against the
    ``B * world`` global columns in both directions, the positive of local sample ``i`` sitting at column
    ``rank * B + i``. Each rank's loss is normalised by its local batch size, so the mean over ranks (what DDP's
    gradient averaging optimises) equals the single-process loss over the concatenated batch.

    References:
        Radford, Alec, et al. "Learning Transferable Visual Models From Natural Language Supervision." ICML 2021
        (https://arxiv.org/abs/2103.00020): symmetric image–text InfoNCE (its learnable temperature is
        :class:`~sista_monai.networks.LearnableTemperature`, held by the model).

        van den Oord, Aaron, et al. "Representation Learning with Contrastive Predictive Coding." 2018
        (https://arxiv.org/abs/1807.03748): InfoNCE.

        Wang, Fuying, et al. "Multi-Granularity Cross-modal Alignment for Generalized Medical Visual
        Representation Learning." NeurIPS 2022 (https://arxiv.org/abs/2210.06044): instance-level image–report
        alignment.

        Wang, Zifeng, et al. "MedCLIP: Contrastive Learning from Unpaired Medical Images and Text." EMNLP 2022
        (https://arxiv.org/abs/2210.10163): semantic matching to avoid false negatives, soft targets.

        Khosla, Prannay, et al. "Supervised Contrastive Learning." NeurIPS 2020
        (https://arxiv.org/abs/2004.11362): multi-positive InfoNCE averaged over positives.
    """

    def __init__(
        self,
        threshold: float,
        mode: str = "eliminate",
        temperature: float = 0.07,
        learnable_temperature: bool = False,
        temperature_bounds: tuple[float, float] = (0.01, 1.0),
        soft_temperature: float = 0.1,
        gather_distributed: bool = True,
        min_negatives: int = 1,
    ) -> None:
        """
        Args:
            threshold: ``theta``; an off-diagonal pair is a false negative when ``report_sim >= threshold``.
            mode: ``"eliminate"``, ``"positive"`` or ``"soft"`` (see the class docstring).
            temperature: ``tau`` of the image–report logits, used when :meth:`forward` is given none.
            learnable_temperature: must be ``False``. A learnable ``tau`` lives in the model
                (``SISTAModel(learnable_temperature=True)``), which returns it for :meth:`forward`'s ``temperature``;
                the argument stays so that configurations naming it ``false`` keep working.
            temperature_bounds: validated (``0 < min <= max``) and otherwise unused; kept so that configurations
                naming it keep working. The bounds of a learnable ``tau`` are ``SISTAModel(temperature_bounds=...)``.
            soft_temperature: ``tau_R`` of the soft targets (``mode="soft"`` only).
            gather_distributed: use the global batch as negatives when running distributed.
            min_negatives: the guard against rows that lose every negative. A row (anchor) with fewer than this
                many unflagged unpaired columns gets back its least similar flagged columns (lowest ``R``, ties by
                column order) as negatives until it has ``min_negatives`` (or every column it has). Without it such
                a row's ``eliminate`` loss is ``-log(exp(s_ii) / exp(s_ii)) = 0`` with no gradient, silently. ``0``
                disables the guard. Rows whose every unpaired column was flagged (before the guard, in
                ``eliminate`` mode) are counted in ``rows_without_negatives``.
                The guard acts in ``eliminate`` mode only: ``positive`` and ``soft`` keep every column in the softmax
                denominator, so a fully flagged row still has a loss and a gradient there (``soft`` with
                ``threshold=-inf`` is meant to flag the whole row).

        Raises:
            ValueError: when ``mode`` is unknown, a temperature is not positive, the bounds are not
                ``0 < min <= max``, or ``learnable_temperature`` is ``True`` (set it on the model).
        """
        super().__init__()
        if mode not in SIA_MODES:
            raise ValueError(f"mode must be one of {SIA_MODES}, got {mode!r}.")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        if not soft_temperature > 0:
            raise ValueError(f"soft_temperature must be positive, got {soft_temperature}.")
        low, high = (float(b) for b in temperature_bounds)
        if not 0 < low <= high:
            raise ValueError(f"temperature_bounds must satisfy 0 < min <= max, got {tuple(temperature_bounds)}.")
        if learnable_temperature:
            raise ValueError(
                "the learnable SIA temperature lives in the model: set SISTAModel(learnable_temperature=True, "
                "temperature=..., temperature_bounds=...) (the bundle key sia_learnable_temperature does) and leave "
                "the loss's learnable_temperature False; the model returns the clamped temperature, which the trainer "
                "passes to the loss."
            )
        self.threshold = float(threshold)
        self.mode = mode
        self.soft_temperature = float(soft_temperature)
        self.gather_distributed = gather_distributed
        if min_negatives < 0:
            raise ValueError(f"min_negatives must be non-negative, got {min_negatives}.")
        self.min_negatives = int(min_negatives)
        self.temperature = float(temperature)

    def forward(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        report_sim: torch.Tensor,
        label_agreement: torch.Tensor | None = None,
        temperature: torch.Tensor | float | None = None,
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            image_emb: ``(B, D)`` image embeddings ``v``, L2-normalised.
            text_emb: ``(B, D)`` report embeddings ``t``, L2-normalised.
            report_sim: ``(B, B)`` report–report similarity ``R`` (``(B, B * world)`` against the gathered
                columns when distributed), e.g. from :class:`ReportSimilarity`. No gradient flows into it.
            label_agreement: optional ``(B, B)`` (``(B, B * world)``) boolean, ``True`` where two reports'
                findings agree (:func:`finding_label_agreement`); enables ``flag_precision``/``flag_recall``.
            temperature: ``tau`` for this call, e.g. the learnable temperature that
                :class:`~sista_monai.networks.SISTAModel` returns (a scalar tensor, whose gradient then flows);
                ``None`` (default) uses the constructor's fixed ``temperature``.

        Returns:
            A dict with ``"loss"`` (scalar, with gradient) and detached diagnostics: ``"false_negative_rate"``
            (fraction of this rank's off-diagonal pairs flagged), ``"temperature"``, and with
            ``label_agreement`` ``"flag_precision"`` (fraction of flagged pairs whose labels agree) and
            ``"flag_recall"`` (fraction of label-agreeing off-diagonal pairs flagged), NaN when undefined.

        Raises:
            ValueError: when the shapes are inconsistent.
        """
        if image_emb.ndim != 2 or text_emb.ndim != 2:
            raise ValueError(
                f"image_emb and text_emb must have shape (B, D), got {tuple(image_emb.shape)} "
                f"and {tuple(text_emb.shape)}."
            )
        if image_emb.shape != text_emb.shape:
            raise ValueError(
                f"image_emb {tuple(image_emb.shape)} and text_emb {tuple(text_emb.shape)} must have the same shape."
            )
        batch = image_emb.shape[0]
        if batch == 0:
            raise ValueError("image_emb and text_emb must hold at least one sample, got B = 0.")
        rank, world = world_info() if self.gather_distributed else (0, 1)
        num_columns = batch * world
        if report_sim.shape != (batch, num_columns):
            raise ValueError(
                f"report_sim must have shape (B, B * world) = ({batch}, {num_columns}) "
                f"(world = {world}), got {tuple(report_sim.shape)}."
            )
        if label_agreement is not None and label_agreement.shape != (batch, num_columns):
            raise ValueError(
                f"label_agreement must have shape (B, B * world) = ({batch}, {num_columns}), "
                f"got {tuple(label_agreement.shape)}."
            )

        tau = self.temperature if temperature is None else temperature
        targets = torch.arange(batch, device=image_emb.device) + rank * batch
        if world > 1:
            all_images = gather_with_grad(image_emb)
            all_texts = gather_with_grad(text_emb)
            logits_image_to_text = image_emb @ all_texts.T / tau
            logits_text_to_image = text_emb @ all_images.T / tau
        else:
            logits_image_to_text = image_emb @ text_emb.T / tau
            logits_text_to_image = logits_image_to_text.T

        report_sim = report_sim.detach()
        positive_mask = F.one_hot(targets, num_columns).bool()
        flagged = false_negative_flags(report_sim, self.threshold, rank * batch)
        negatives = (num_columns - 1) - flagged.sum(dim=1)
        # only eliminate mode loses a row's contrast when every unpaired column is flagged (counted before the guard)
        rows_without_negatives = (
            (negatives == 0).sum()
            if self.mode == "eliminate"
            else torch.zeros((), dtype=torch.long, device=flagged.device)
        )
        guard = self.mode == "eliminate" and self.min_negatives > 0
        excluded = self._keep_negatives(flagged, report_sim, negatives) if guard else flagged

        loss = 0.5 * (
            self._directional_loss(logits_image_to_text, targets, positive_mask, excluded, report_sim)
            + self._directional_loss(logits_text_to_image, targets, positive_mask, excluded, report_sim)
        )

        output = {
            "loss": loss,
            "false_negative_rate": self._safe_ratio(flagged.sum(), batch * (num_columns - 1)),
            "temperature": torch.as_tensor(tau, device=image_emb.device).detach(),
            "rows_without_negatives": rows_without_negatives.detach().float(),
        }
        if label_agreement is not None:
            agree = label_agreement.bool() & ~positive_mask
            true_flags = (flagged & agree).sum()
            output["flag_precision"] = self._safe_ratio(true_flags, flagged.sum())
            output["flag_recall"] = self._safe_ratio(true_flags, agree.sum())
        return output

    def _keep_negatives(self, flagged: torch.Tensor, report_sim: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """Unflag each row's least similar flagged columns until it has ``min_negatives`` negatives."""
        deficit = (self.min_negatives - negatives).clamp_min(0)
        order = report_sim.masked_fill(~flagged, float("inf")).argsort(dim=1, stable=True)
        restore = torch.arange(flagged.shape[1], device=flagged.device)[None, :] < deficit[:, None]
        restored = torch.zeros_like(flagged).scatter(1, order, restore)
        return flagged & ~restored

    def _directional_loss(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        positive_mask: torch.Tensor,
        flagged: torch.Tensor,
        report_sim: torch.Tensor,
    ) -> torch.Tensor:
        """Mean over the ``B`` local anchors of one direction's loss; ``logits`` is ``(B, B * world)``."""
        if self.mode == "eliminate":
            return F.cross_entropy(logits.masked_fill(flagged, float("-inf")), targets)
        log_prob = F.log_softmax(logits, dim=1)
        candidates = positive_mask | flagged
        if self.mode == "positive":
            per_anchor = -(log_prob * candidates).sum(dim=1) / candidates.sum(dim=1)
            return per_anchor.mean()
        soft_targets = torch.softmax(
            (report_sim / self.soft_temperature).masked_fill(~candidates, float("-inf")), dim=1
        )
        return -(soft_targets * log_prob).sum(dim=1).mean()

    @staticmethod
    def _safe_ratio(numerator: torch.Tensor, denominator: torch.Tensor | int) -> torch.Tensor:
        """``numerator / denominator`` as a detached float; 0 / 0 gives NaN without a host synchronisation."""
        numerator = numerator.detach().float()
        return numerator / torch.as_tensor(denominator, dtype=numerator.dtype, device=numerator.device)

    def extra_repr(self) -> str:
        return (
            f"threshold={self.threshold}, mode={self.mode!r}, temperature={self.temperature}, "
            f"soft_temperature={self.soft_temperature}"
        )
