"""The SISTA model: an image encoder, a text encoder and four projection heads."""

from __future__ import annotations

import copy
import logging
from typing import SupportsInt, cast

import torch
from torch import nn

from .heads import LearnableTemperature, PositionCentering, ProjectionHead
from .outputs import SISTAOutput

__all__ = ["SISTAModel"]

logger = logging.getLogger(__name__)


def _out_channels(encoder: nn.Module) -> int:
    """An encoder's ``out_channels``: an int attribute, which ``nn.Module`` types as a tensor or a module."""
    return int(cast(SupportsInt, encoder.out_channels))


class SISTAModel(nn.Module):
    """Wires encoders and heads and returns one :class:`~sista_monai.networks.SISTAOutput` per batch.

    Four heads map to the shared D-dimensional space: image global (``v``), image patches (``p``), report
    global (``t``) and report tokens (``w``) — global and local heads are separate, as in MGCA.

    Args:
        image_encoder: a module returning :class:`~sista_monai.networks.ImageEncoderOutput` with an
            ``out_channels`` attribute (:class:`ViTImageEncoder`, :class:`ResNetImageEncoder`).
        text_encoder: a module returning :class:`~sista_monai.networks.TextEncoderOutput` with an
            ``out_channels`` attribute (:class:`HuggingFaceTextEncoder`).
        embed_dim: D.
        head_hidden_dim: hidden width of the heads (``None``: the encoder width; 0: linear heads).
        keep_frozen_text_copy: keep a frozen copy of the text encoder as it is now (before training), whose
            pooled features feed the ``text_frozen`` report-similarity source (METHOD.md §1). The copy never
            trains and always runs in eval mode.
        temperature: the initial ``tau`` of SIA's image–report logits when ``learnable_temperature``; unused
            otherwise (the SIA loss's own fixed ``temperature`` then applies).
        learnable_temperature: learn ``log(tau)`` in this model (a :class:`LearnableTemperature` under
            ``temperature``, state-dict key ``temperature.log_temperature``), as open_clip keeps ``logit_scale``
            in the model: the optimiser, the checkpoint and DDP's gradient averaging hold it with every other
            weight. Every forward returns ``tau`` clamped to ``temperature_bounds`` in ``SISTAOutput.temperature``.
        temperature_bounds: ``(min, max)`` of a learnable ``tau``; CLIP's logit-scale clamp at 100 is a minimum of
            0.01.
        patch_centering: ``"position"`` subtracts each patch position's running mean embedding before the
            normalisation of the patch head (:class:`~sista_monai.networks.heads.PositionCentering`), so that what a
            word points at in an image is what that image, not the average image, puts there;
            ``"position_and_image"`` also subtracts each image's mean over its patches; ``"none"`` (or ``None``,
            ``False``) neither. ``True`` means ``"position"``.

    Raises:
        ValueError: when ``learnable_temperature`` and the bounds are not ``0 < min <= max`` or ``temperature``
            lies outside them.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        embed_dim: int = 128,
        head_hidden_dim: int | None = None,
        keep_frozen_text_copy: bool = False,
        temperature: float = 0.07,
        learnable_temperature: bool = False,
        temperature_bounds: tuple[float, float] = (0.01, 1.0),
        patch_centering: bool | str | None = None,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        image_dim, text_dim = _out_channels(image_encoder), _out_channels(text_encoder)
        self.image_global_head = ProjectionHead(image_dim, embed_dim, head_hidden_dim)
        centering = None
        modes = {None: None, False: None, "none": None, True: "position", "position": "position"}
        modes["position_and_image"] = "position_and_image"
        if not isinstance(patch_centering, (bool, str, type(None))) or patch_centering not in modes:
            raise ValueError(
                f"patch_centering must be 'none', 'position' or 'position_and_image', got {patch_centering!r}."
            )
        self.patch_centering = modes[patch_centering]
        if self.patch_centering:
            grid = getattr(image_encoder, "patch_grid", None)
            if grid is None:
                raise ValueError("patch_centering needs an image encoder with a fixed patch_grid attribute.")
            centering = PositionCentering(
                int(grid[0]) * int(grid[1]), embed_dim, per_image=self.patch_centering == "position_and_image"
            )
        self.image_local_head = ProjectionHead(image_dim, embed_dim, head_hidden_dim, centering)
        self.text_global_head = ProjectionHead(text_dim, embed_dim, head_hidden_dim)
        self.text_local_head = ProjectionHead(text_dim, embed_dim, head_hidden_dim)
        self.embed_dim = embed_dim
        self.frozen_text_encoder: nn.Module | None = None
        if keep_frozen_text_copy:
            if getattr(text_encoder, "pretrained", True) is False:
                logger.warning(
                    "the frozen text copy (SIA's text_frozen report similarity) comes from a randomly initialised text "
                    "encoder: its report features say nothing about the findings, so the SIA flags are arbitrary; give "
                    "the text encoder name_or_path or pretrained_weights, or use similarity_source 'labels'"
                )
            self.frozen_text_encoder = copy.deepcopy(text_encoder).eval()
            self.frozen_text_encoder.requires_grad_(False)
        # registered last, so that it is the last trainable parameter, where the optimiser of a checkpoint written
        # when the SIA loss held the temperature (network parameters, then the loss's) has its state
        self.temperature: LearnableTemperature | None = (
            LearnableTemperature(temperature, temperature_bounds) if learnable_temperature else None
        )

    def train(self, mode: bool = True) -> SISTAModel:
        """Set train/eval mode; the frozen text copy stays in eval mode."""
        super().train(mode)
        if self.frozen_text_encoder is not None:
            self.frozen_text_encoder.eval()
        return self

    def encode_image(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """``(v, p, patch_grid)``: the image's global ``(B, D)`` and patch ``(B, P, D)`` embeddings."""
        features = self.image_encoder(image)
        return (
            self.image_global_head(features.global_features),
            self.image_local_head(features.patch_features),
            features.patch_grid,
        )

    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        word_mask: torch.Tensor | None = None,
        word_start: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(t, w, word_mask)``: the report's global ``(B, D)`` and token ``(B, T, D)`` embeddings.

        With ``word_start`` the token embeddings are per word (pieces averaged at the first piece; see
        :meth:`HuggingFaceTextEncoder.forward`) and the returned mask keeps first pieces only.
        """
        features = self.text_encoder(input_ids, attention_mask, word_mask, word_start)
        return (
            self.text_global_head(features.global_features),
            self.text_local_head(features.token_features),
            features.token_mask,
        )

    def forward(
        self,
        image: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        word_mask: torch.Tensor | None = None,
        word_start: torch.Tensor | None = None,
    ) -> SISTAOutput:
        """Encode a batch of image–report pairs (``word_start``: see :meth:`encode_text`).

        The output's ``temperature`` is the clamped learnable ``tau`` (with gradient), ``None`` when it is fixed.
        """
        image_emb, patch_emb, grid = self.encode_image(image)
        text_emb, token_emb, token_mask = self.encode_text(input_ids, attention_mask, word_mask, word_start)
        frozen = None
        if self.frozen_text_encoder is not None:
            with torch.no_grad():
                frozen = self.frozen_text_encoder(input_ids, attention_mask, word_mask).global_features.detach()
        temperature = self.temperature() if self.temperature is not None else None
        return SISTAOutput(image_emb, patch_emb, text_emb, token_emb, token_mask, grid, frozen, temperature)
