"""Dataclass outputs of the SISTA networks (named fields instead of tuples, as in hi-ml-multimodal)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ImageEncoderOutput", "TextEncoderOutput", "SISTAOutput"]


@dataclass
class ImageEncoderOutput:
    """What an image encoder returns.

    Attributes:
        global_features: ``(B, C)`` one vector per image.
        patch_features: ``(B, P, C)`` one vector per patch (ViT tokens or CNN last-stage cells), in row-major
            order over ``patch_grid``.
        patch_grid: ``(gx, gy)``, the patch grid along the two spatial axes of the input, in the input's
            axis order (MONAI's ``(W, H)`` layout: ``gx`` patches along the image columns); ``P = gx * gy``
            and patch ``k`` sits at ``(k // gy, k % gy)``.
        hidden_states: per-block features (ViT: ``(B, 1 + P, C)`` each), for decoders such as UNETR; empty when
            not requested.
    """

    global_features: torch.Tensor
    patch_features: torch.Tensor
    patch_grid: tuple[int, int]
    hidden_states: tuple[torch.Tensor, ...] = ()


@dataclass
class TextEncoderOutput:
    """What a text encoder returns.

    Attributes:
        global_features: ``(B, H)`` one vector per report.
        token_features: ``(B, T, H)`` one vector per token.
        token_mask: ``(B, T)`` bool, the tokens that count as words (no special or padding tokens).
    """

    global_features: torch.Tensor
    token_features: torch.Tensor
    token_mask: torch.Tensor


@dataclass
class SISTAOutput:
    """Everything the SISTA losses need from one batch; all embeddings are L2-normalised.

    Attributes:
        image_emb: ``(B, D)`` image global embeddings ``v``.
        patch_emb: ``(B, P, D)`` patch embeddings ``p``.
        text_emb: ``(B, D)`` report global embeddings ``t``.
        token_emb: ``(B, T, D)`` token embeddings ``w``.
        token_mask: ``(B, T)`` bool word mask.
        patch_grid: the image encoder's patch grid (see :class:`ImageEncoderOutput`).
        frozen_text_features: ``(B, H)`` pooled features of the frozen text encoder copy (no gradient), for the
            ``text_frozen`` report-similarity source; ``None`` when the model keeps no frozen copy.
        temperature: scalar SIA temperature ``tau`` learned by the model, clamped to its bounds (with gradient);
            ``None`` when the temperature is fixed (the SIA loss then uses its own).
    """

    image_emb: torch.Tensor
    patch_emb: torch.Tensor
    text_emb: torch.Tensor
    token_emb: torch.Tensor
    token_mask: torch.Tensor
    patch_grid: tuple[int, int]
    frozen_text_features: torch.Tensor | None = None
    temperature: torch.Tensor | None = None
