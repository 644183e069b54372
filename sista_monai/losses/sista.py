"""The SISTA objective: weighted sum of the instance (SIA) and token (STA) alignment losses (METHOD.md §3)."""

from __future__ import annotations

import torch
from torch import nn

from sista_monai.losses.sia import SemanticInstanceAlignmentLoss
from sista_monai.losses.sta import SparseTokenAlignmentLoss

__all__ = ["SISTALoss"]


class SISTALoss(nn.Module):
    """``L = lambda_instance * L_SIA + lambda_token * L_STA``, each term reported separately.

    The two terms are given as modules, so a bundle config builds them with ``_target_`` and hands them over::

        "loss": {
            "_target_": "sista_monai.losses.SISTALoss",
            "sia": {"_target_": "sista_monai.losses.SemanticInstanceAlignmentLoss", "threshold": 0.9},
            "sta": {"_target_": "sista_monai.losses.SparseTokenAlignmentLoss"},
            "lambda_instance": 1.0,
            "lambda_token": 1.0
        }

    A term whose weight is 0 is skipped (not computed), its module may then be ``None`` and its inputs omitted.
    The module holds no parameters: a learnable SIA temperature lives in the model
    (``SISTAModel(learnable_temperature=True)``) and comes in through :meth:`forward`'s ``temperature``.

    References:
        Bui et al. "Representation Learning with Semantic-aware Instance and Sparse Token Alignments" (SISTA),
        2026; see :class:`SemanticInstanceAlignmentLoss` and :class:`SparseTokenAlignmentLoss` for the sources
        of each term.
    """

    def __init__(
        self,
        sia: SemanticInstanceAlignmentLoss | None = None,
        sta: SparseTokenAlignmentLoss | None = None,
        lambda_instance: float = 1.0,
        lambda_token: float = 1.0,
        sta_pairs: str = "matched",
    ) -> None:
        """
        Args:
            sia: the instance-level loss; ``None`` only when ``lambda_instance`` is 0.
            sta: the token-level loss; ``None`` builds a default :class:`SparseTokenAlignmentLoss` when
                ``lambda_token`` is non-zero.
            lambda_instance: ``lambda_inst``, weight of the SIA term.
            lambda_token: ``lambda_tok``, weight of the STA term.
            sta_pairs: ``"matched"`` (the method) or ``"shuffled"``, a **control**: STA is computed on mismatched
                image–report pairs (each report's words against the patches of the next image of the local batch,
                ``patch_emb.roll(1, 0)``) while SIA keeps the true pairs. A downstream gain that survives shuffling
                is not owed to word–patch alignment.

        Raises:
            ValueError: when a weight is negative, both are 0, ``sia`` is missing while ``lambda_instance`` is
                non-zero, or ``sta_pairs`` is unknown.
        """
        super().__init__()
        if sta_pairs not in ("matched", "shuffled"):
            raise ValueError(f"sta_pairs must be 'matched' or 'shuffled', got {sta_pairs!r}.")
        self.sta_pairs = sta_pairs
        if lambda_instance < 0 or lambda_token < 0:
            raise ValueError(
                f"lambda_instance and lambda_token must be non-negative, got {lambda_instance} and {lambda_token}."
            )
        if lambda_instance == 0 and lambda_token == 0:
            raise ValueError("at least one of lambda_instance and lambda_token must be positive.")
        if lambda_instance > 0 and sia is None:
            raise ValueError("sia (a SemanticInstanceAlignmentLoss) is required when lambda_instance > 0.")
        if lambda_token > 0 and sta is None:
            sta = SparseTokenAlignmentLoss()
        self.sia = sia
        self.sta = sta
        self.lambda_instance = float(lambda_instance)
        self.lambda_token = float(lambda_token)

    def forward(
        self,
        image_emb: torch.Tensor | None = None,
        text_emb: torch.Tensor | None = None,
        report_sim: torch.Tensor | None = None,
        patch_emb: torch.Tensor | None = None,
        token_emb: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,
        label_agreement: torch.Tensor | None = None,
        return_weights: bool = False,
        token_groups: torch.Tensor | None = None,
        temperature: torch.Tensor | float | None = None,
        content_words: torch.Tensor | None = None,
        content_sides: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            image_emb: ``(B, D)`` global image embeddings (SIA).
            text_emb: ``(B, D)`` global report embeddings (SIA).
            report_sim: ``(B, B)`` (``(B, B * world)`` distributed) report–report similarity (SIA), see
                :class:`ReportSimilarity`.
            patch_emb: ``(B, P, D)`` patch embeddings (STA).
            token_emb: ``(B, T, D)`` token embeddings (STA).
            token_mask: ``(B, T)`` boolean validity of the tokens (STA).
            label_agreement: optional ``(B, B)`` (``(B, B * world)``) boolean label agreement for the SIA flag
                precision/recall diagnostics.
            return_weights: also return the STA alignment weights under ``"weights"``.
            token_groups: optional ``(B, T)`` word identities for STA (repeated words are not each other's
                negatives); see :meth:`SparseTokenAlignmentLoss.forward`.
            temperature: SIA's ``tau`` for this call, e.g. ``SISTAOutput.temperature`` of a model with a learnable
                temperature; ``None`` uses the SIA loss's fixed ``temperature``.
            content_words: optional ``(B, T)`` finding class of each content word (``-1`` elsewhere) for STA's
                cross-image term (``SparseTokenAlignmentLoss(contrast="cross" | "both")``, which requires it).
            content_sides: optional ``(B, T)`` side of each content word (0 unspecified, 1 right, 2 left) for
                STA's cross-image term.

        Returns:
            ``"loss"`` (with gradient), ``"loss_sia"`` and ``"loss_sta"`` (detached; 0 for a skipped term) and the
            detached diagnostics of the computed terms: ``"false_negative_rate"``, ``"temperature"``,
            ``"flag_precision"``, ``"flag_recall"`` (SIA) and ``"sparsity"`` (STA). When STA computes its
            cross-image term (``contrast="cross" | "both"``) its separate, unweighted terms come too, as
            ``"loss_sta_cross"`` and (with ``"both"``) ``"loss_sta_within"``, with ``"sta_content_words"`` (number of
            content words of the global batch); with the within-pair term alone ``"loss_sta"`` is that term.

        Raises:
            ValueError: when an input of a computed term is missing.
        """
        output: dict[str, torch.Tensor] = {}
        terms: list[torch.Tensor] = []
        if self.lambda_instance > 0 and self.sia is not None:  # the constructor requires sia for a weighted SIA
            image_emb, text_emb, report_sim = self._require(
                image_emb=image_emb, text_emb=text_emb, report_sim=report_sim
            )
            sia = self.sia(image_emb, text_emb, report_sim, label_agreement=label_agreement, temperature=temperature)
            terms.append(self.lambda_instance * sia["loss"])
            output["loss_sia"] = sia.pop("loss").detach()
            output.update(sia)
        if self.lambda_token > 0 and self.sta is not None:  # the constructor builds a default STA when weighted
            patch_emb, token_emb, token_mask = self._require(
                patch_emb=patch_emb, token_emb=token_emb, token_mask=token_mask
            )
            content = {
                name: value
                for name, value in (("content_words", content_words), ("content_sides", content_sides))
                if value is not None
            }
            if self.sta_pairs == "shuffled":
                patch_emb = patch_emb.roll(1, dims=0)
            sta = self.sta(
                patch_emb, token_emb, token_mask, return_weights=return_weights, token_groups=token_groups, **content
            )
            terms.append(self.lambda_token * sta["loss"])
            output["loss_sta"] = sta.pop("loss").detach()
            # STA's terms are reported separately only when there are two of them to tell apart: with the
            # within-pair term alone "loss_sta" is that term, and the output keeps its historical keys
            separate = "loss_cross" in sta
            for name, renamed in (
                ("loss_within", "loss_sta_within"),
                ("loss_cross", "loss_sta_cross"),
                ("content_words", "sta_content_words"),
            ):
                if name in sta:
                    value = sta.pop(name).detach()
                    if separate:
                        output[renamed] = value
            output.update(sta)
        loss = terms[0] if len(terms) == 1 else terms[0] + terms[1]
        for name in ("loss_sia", "loss_sta"):
            output.setdefault(name, torch.zeros((), dtype=loss.dtype, device=loss.device))
        output["loss"] = loss
        return output

    def _require(self, **inputs: torch.Tensor | None) -> list[torch.Tensor]:
        """The inputs, in order, when none is ``None``."""
        present = [value for value in inputs.values() if value is not None]
        if len(present) < len(inputs):
            missing = [name for name, value in inputs.items() if value is None]
            raise ValueError(f"{', '.join(missing)} required by a term with a non-zero weight, got None.")
        return present

    def extra_repr(self) -> str:
        text = f"lambda_instance={self.lambda_instance}, lambda_token={self.lambda_token}"
        return text if self.sta_pairs == "matched" else f"{text}, sta_pairs={self.sta_pairs!r}"
