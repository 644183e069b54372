"""Downstream networks on a pretrained image encoder: an image-only classifier exportable to TorchScript.

The SISTA encoders (:mod:`sista_monai.networks`) return an :class:`~sista_monai.networks.ImageEncoderOutput`
dataclass, which TorchScript cannot compile. :class:`GlobalImageFeatures` wraps the encoder's MONAI backbone
(``encoder.vit`` or ``encoder.resnet``, the same module objects, under the same attribute names) and returns
only the global feature vector, so that

* the classifier's state dict keeps the encoder's key layout (``encoder.vit.*`` / ``encoder.resnet.*``), and
* ``python -m monai.bundle ckpt_export`` can script the whole network (an image-only ``network_def``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sista_monai.config import as_flag

from .image_encoders import ResNetImageEncoder, ViTImageEncoder

__all__ = ["OUTPUT_KINDS", "GlobalImageFeatures", "ChestXrayClassifier"]

OUTPUT_KINDS = ("logits", "probabilities")
"""What :class:`ChestXrayClassifier` returns: raw logits (training, ``BCEWithLogitsLoss``) or sigmoid
probabilities (inference and the exported TorchScript model)."""


class GlobalImageFeatures(nn.Module):
    """The global feature vector of a SISTA image encoder, as a TorchScript-compatible module.

    Computes exactly ``encoder(image).global_features`` (tested against it) through the encoder's own MONAI
    backbone: the ViT's ``[CLS]`` token or patch-token mean after the final norm, or the ResNet's pooled last
    stage.

    Args:
        encoder: a :class:`~sista_monai.networks.ViTImageEncoder` or
            :class:`~sista_monai.networks.ResNetImageEncoder` (its modules are shared, not copied).

    Raises:
        TypeError: any other encoder type.
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        # Only the backbone of the encoder's architecture is registered: TorchScript resolves ``hasattr`` on a
        # module statically, so the forward pass compiles the one branch that exists.
        if isinstance(encoder, ViTImageEncoder):
            self.vit = encoder.vit
            self.mean_pooling = encoder.pooling == "mean"
        elif isinstance(encoder, ResNetImageEncoder):
            self.resnet = encoder.resnet
            self.mean_pooling = False
        else:
            raise TypeError(
                f"unsupported image encoder {type(encoder).__name__}: expected ViTImageEncoder or ResNetImageEncoder"
            )
        self.img_size = tuple(int(s) for s in encoder.img_size)
        self.out_channels = int(encoder.out_channels)
        self._config = encoder.config()

    def config(self) -> dict[str, Any]:
        """The wrapped encoder's :meth:`config` (rebuilds it with :func:`sista_monai.networks.build_image_encoder`)."""
        return dict(self._config)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, C, W, H)`` images → ``(B, out_channels)`` global features."""
        if hasattr(self, "vit"):
            tokens = self.vit(image)[0]
            if self.mean_pooling:
                return tokens[:, 1:].mean(dim=1)
            return tokens[:, 0]
        return self.resnet(image)


class ChestXrayClassifier(nn.Module):
    """Pretrained image encoder + linear head: ``(B, 1, W, H)`` radiographs → ``(B, num_classes)``.

    The forward pass takes the image only, so the network is the bundle's ``network_def`` for
    ``verify_net_in_out`` and ``ckpt_export``. With ``freeze_encoder=True`` (linear probe, the MGCA protocol)
    the encoder's parameters do not require gradients and the encoder stays in evaluation mode even while the
    classifier trains (batch-norm statistics of a ResNet encoder are not updated).

    Args:
        encoder: a SISTA image encoder (weights already loaded, see
            :func:`sista_monai.io.load_pretrained_encoder`).
        num_classes: output channels (1 for pneumonia present/absent).
        freeze_encoder: linear probe (``True``) or fine-tuning (``False``); ``"true"``/``"false"`` as typed on the
            command line are accepted (see :func:`sista_monai.config.as_flag`).
        output: ``"logits"`` or ``"probabilities"`` (sigmoid applied), see :data:`OUTPUT_KINDS`.
        dropout: dropout on the features before the head.

    Raises:
        ValueError: an unknown ``output``, ``num_classes < 1`` or a ``freeze_encoder`` that is not a flag.
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int = 1,
        freeze_encoder: bool = True,
        output: str = "logits",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if output not in OUTPUT_KINDS:
            raise ValueError(f"output must be one of {OUTPUT_KINDS}, got {output!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.encoder = encoder if isinstance(encoder, GlobalImageFeatures) else GlobalImageFeatures(encoder)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.encoder.out_channels, num_classes)
        self.probabilities = output == "probabilities"
        self.freeze_encoder = as_flag(freeze_encoder, "freeze_encoder")
        if self.freeze_encoder:
            self.encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> ChestXrayClassifier:
        """Set training mode; a frozen encoder always stays in evaluation mode."""
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, 1, W, H)`` → ``(B, num_classes)`` logits or probabilities."""
        logits = self.head(self.dropout(self.encoder(image)))
        if self.probabilities:
            return torch.sigmoid(logits)
        return logits
