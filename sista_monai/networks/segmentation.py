"""Segmentation networks on a pretrained image encoder (image in, one mask channel out; TorchScript-exportable).

The encoder's modules are shared and the pretrained encoder's state-dict keys kept (``vit.*`` as exported, or
under ``unet.encoder.resnet.*``):

* :class:`ViTSegmentationNet`: a UNETR-style decoder (MONAI's ``UnetrBasicBlock``, ``UnetrPrUpBlock``,
  ``UnetrUpBlock`` and ``UnetOutBlock`` with ``spatial_dims=2``) fed by three intermediate blocks and the final
  normed tokens of the pretrained ViT (``encoder.vit``), reshaped to the patch grid (MONAI's row-major order
  over the ``(W, H)`` grid);
* :class:`ResNetSegmentationNet`: MONAI's :class:`~monai.networks.nets.FlexibleUNet` decoder on the stages of
  the pretrained MONAI ResNet. FlexibleUNet builds its own ``ResNetEncoder`` (``ResNetFeatures``), whose
  ``conv1`` stride is fixed to 2 and whose downsampling convolutions have no bias for ResNet-50, so the
  pretrained weights cannot be loaded into it key for key; the encoder module is therefore replaced by
  :class:`ResNetStages`, which returns the same five feature maps from the pretrained ``encoder.resnet``.

:func:`segmentation_network` picks the one that fits the encoder. ``freeze_encoder=True`` (the MGCA protocol)
freezes the encoder and keeps it in evaluation mode.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock
from monai.networks.nets import FlexibleUNet, ResNet
from torch import nn

from sista_monai.config import as_flag

from .classification import OUTPUT_KINDS
from .image_encoders import ResNetImageEncoder, ViTImageEncoder

logger = logging.getLogger(__name__)

__all__ = [
    "ViTSegmentationNet",
    "ResNetStages",
    "ResNetSegmentationNet",
    "segmentation_network",
]


def _check_output(output: str) -> bool:
    if output not in OUTPUT_KINDS:
        raise ValueError(f"output must be one of {OUTPUT_KINDS}, got {output!r}")
    return output == "probabilities"


def _set_prior(conv: nn.Module, prior_probability: float | None) -> None:
    """Set the output convolution's bias to ``logit(prior_probability)`` (no-op for ``None``)."""
    if prior_probability is None:
        return
    p = float(prior_probability)
    if not 0.0 < p < 1.0:
        raise ValueError(f"prior_probability must lie in (0, 1), got {p}")
    bias = getattr(conv, "bias", None)
    if not isinstance(bias, torch.Tensor):
        raise ValueError(f"{type(conv).__name__} has no bias to initialise")
    with torch.no_grad():
        bias.fill_(float(np.log(p / (1.0 - p))))


class ViTSegmentationNet(nn.Module):
    """UNETR-style 2-D decoder on a pretrained :class:`~sista_monai.networks.ViTImageEncoder`.

    The ViT's hidden states after blocks ``skip_blocks`` (three indices; by default evenly spaced, as UNETR's
    3/6/9 of 12) and its final normed tokens are reshaped to the patch grid and decoded by MONAI's UNETR
    blocks back to the input resolution. The patch size must be 16 (four 2x up-sampling steps).

    Args:
        encoder: the ViT encoder (weights loaded; its ``vit`` module is shared, not copied).
        out_channels: mask channels (1: pneumothorax).
        feature_size: UNETR feature size of the decoder.
        freeze_encoder: frozen encoder (``True``, the MGCA protocol) or fine-tuning; ``"true"``/``"false"``
            accepted.
        output: ``"logits"`` (training with ``DiceFocalLoss(sigmoid=True)``) or ``"probabilities"``.
        norm_name: normalisation of the decoder blocks.
        res_block: residual decoder blocks.
        skip_blocks: the three (0-based) ViT blocks whose outputs feed the skip connections.
        prior_probability: initial foreground probability of every pixel (the output bias is set to its logit,
            as RetinaNet does for rare foreground); ``None`` keeps MONAI's initialisation.

    Raises:
        TypeError: not a ViT encoder.
        ValueError: a patch size other than 16, or invalid ``output``/``skip_blocks``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        out_channels: int = 1,
        feature_size: int = 16,
        freeze_encoder: bool = True,
        output: str = "logits",
        norm_name: str = "instance",
        res_block: bool = True,
        skip_blocks: Sequence[int] | None = None,
        prior_probability: float | None = 0.01,
    ) -> None:
        super().__init__()
        if not isinstance(encoder, ViTImageEncoder):
            raise TypeError(f"ViTSegmentationNet needs a ViTImageEncoder, got {type(encoder).__name__}")
        if tuple(encoder.patch_size) != (16, 16):
            raise ValueError(f"the UNETR-style decoder needs 16x16 patches, got {tuple(encoder.patch_size)}")
        self.probabilities = _check_output(output)
        num_layers = len(encoder.vit.blocks)
        if skip_blocks is None:
            skip_blocks = [max(0, (k + 1) * num_layers // 4 - 1) for k in range(3)]
        skips = [int(i) for i in skip_blocks]
        if len(skips) != 3 or not all(0 <= i < num_layers for i in skips):
            raise ValueError(f"skip_blocks must be three block indices in [0, {num_layers}), got {list(skip_blocks)}")
        self.skip1, self.skip2, self.skip3 = skips
        self.vit = encoder.vit
        self.img_size = tuple(int(s) for s in encoder.img_size)
        self.grid = tuple(int(g) for g in encoder.patch_grid)
        self.hidden_size = int(encoder.out_channels)
        self._config = encoder.config()
        hidden, fs, dims = self.hidden_size, int(feature_size), 2
        self.encoder1 = UnetrBasicBlock(dims, int(encoder.config()["in_channels"]), fs, 3, 1, norm_name, res_block)
        self.encoder2 = UnetrPrUpBlock(dims, hidden, fs * 2, 2, 3, 1, 2, norm_name, True, res_block)
        self.encoder3 = UnetrPrUpBlock(dims, hidden, fs * 4, 1, 3, 1, 2, norm_name, True, res_block)
        self.encoder4 = UnetrPrUpBlock(dims, hidden, fs * 8, 0, 3, 1, 2, norm_name, True, res_block)
        self.decoder5 = UnetrUpBlock(dims, hidden, fs * 8, 3, 2, norm_name, res_block)
        self.decoder4 = UnetrUpBlock(dims, fs * 8, fs * 4, 3, 2, norm_name, res_block)
        self.decoder3 = UnetrUpBlock(dims, fs * 4, fs * 2, 3, 2, norm_name, res_block)
        self.decoder2 = UnetrUpBlock(dims, fs * 2, fs, 3, 2, norm_name, res_block)
        self.out = UnetOutBlock(dims, fs, out_channels)
        _set_prior(self.out.conv.conv, prior_probability)
        self.freeze_encoder = as_flag(freeze_encoder, "freeze_encoder")
        if self.freeze_encoder:
            self.vit.requires_grad_(False)

    __jit_unused_properties__ = ["encoder"]

    @property
    def encoder(self) -> nn.Module:
        """The encoder's backbone (for :func:`~sista_monai.engines.encoder_parameter_groups`)."""
        return self.vit

    def config(self) -> dict[str, Any]:
        """The encoder's :meth:`config`."""
        return dict(self._config)

    def train(self, mode: bool = True) -> ViTSegmentationNet:
        """Set training mode; a frozen encoder always stays in evaluation mode."""
        super().train(mode)
        if self.freeze_encoder:
            self.vit.eval()
        return self

    def _grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, 1 + P, D)`` tokens → ``(B, D, gw, gh)`` (the ``[CLS]`` token dropped)."""
        patches = tokens[:, 1:]
        return (
            patches.reshape(patches.shape[0], self.grid[0], self.grid[1], self.hidden_size)
            .permute(0, 3, 1, 2)
            .contiguous()
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, 1, W, H)`` → ``(B, out_channels, W, H)`` logits or probabilities."""
        tokens = self.vit.patch_embedding(image)
        tokens = torch.cat((self.vit.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        hidden: list[torch.Tensor] = []
        for block in self.vit.blocks:
            tokens = block(tokens)
            hidden.append(tokens)
        tokens = self.vit.norm(tokens)
        enc1 = self.encoder1(image)
        enc2 = self.encoder2(self._grid(hidden[self.skip1]))
        enc3 = self.encoder3(self._grid(hidden[self.skip2]))
        enc4 = self.encoder4(self._grid(hidden[self.skip3]))
        dec3 = self.decoder5(self._grid(tokens), enc4)
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        logits = self.out(self.decoder2(dec1, enc1))
        if self.probabilities:
            return torch.sigmoid(logits)
        return logits


class ResNetStages(nn.Module):
    """The five feature maps of a MONAI 2-D ResNet (as ``ResNetFeatures`` returns them), sharing its modules.

    Args:
        resnet: the pretrained ``encoder.resnet``.
    """

    def __init__(self, resnet: ResNet) -> None:
        super().__init__()
        self.resnet = resnet
        self.no_max_pool = bool(resnet.no_max_pool)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """``(B, C, W, H)`` → stem, layer1..layer4 outputs."""
        net = self.resnet
        x = net.act(net.bn1(net.conv1(image)))
        features: list[torch.Tensor] = [x]
        if not self.no_max_pool:
            x = net.maxpool(x)
        x = net.layer1(x)
        features.append(x)
        x = net.layer2(x)
        features.append(x)
        x = net.layer3(x)
        features.append(x)
        x = net.layer4(x)
        features.append(x)
        return features


class ResNetSegmentationNet(nn.Module):
    """MONAI :class:`~monai.networks.nets.FlexibleUNet` decoder on a pretrained ResNet encoder.

    Args:
        encoder: a :class:`~sista_monai.networks.ResNetImageEncoder` with ``conv1_stride=2``.
        out_channels: mask channels.
        freeze_encoder: frozen encoder (the MGCA protocol) or fine-tuning.
        output: ``"logits"`` or ``"probabilities"``.
        decoder_channels: FlexibleUNet decoder channels (five values).
        prior_probability: initial foreground probability of every pixel (see :class:`ViTSegmentationNet`).

    Raises:
        TypeError: not a ResNet encoder.
        ValueError: ``conv1_stride`` other than 2 (FlexibleUNet's decoder assumes a stride-2 stem).
    """

    def __init__(
        self,
        encoder: nn.Module,
        out_channels: int = 1,
        freeze_encoder: bool = True,
        output: str = "logits",
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        prior_probability: float | None = 0.01,
    ) -> None:
        super().__init__()
        if not isinstance(encoder, ResNetImageEncoder):
            raise TypeError(f"ResNetSegmentationNet needs a ResNetImageEncoder, got {type(encoder).__name__}")
        config = encoder.config()
        if int(config["conv1_stride"]) != 2:
            raise ValueError(f"FlexibleUNet needs a ResNet with conv1_stride=2, got {config['conv1_stride']}")
        self.probabilities = _check_output(output)
        self._config = config
        self.unet = FlexibleUNet(
            in_channels=int(config["in_channels"]),
            out_channels=out_channels,
            backbone=f"resnet{int(config['depth'])}",
            pretrained=False,
            decoder_channels=tuple(int(c) for c in decoder_channels),
            spatial_dims=2,
        )
        self.unet.encoder = ResNetStages(encoder.resnet)
        _set_prior(self.unet.segmentation_head[0], prior_probability)
        self.freeze_encoder = as_flag(freeze_encoder, "freeze_encoder")
        if self.freeze_encoder:
            self.unet.encoder.requires_grad_(False)

    __jit_unused_properties__ = ["encoder"]

    @property
    def encoder(self) -> nn.Module:
        """The encoder's stages (for :func:`~sista_monai.engines.encoder_parameter_groups`)."""
        return self.unet.encoder

    def config(self) -> dict[str, Any]:
        """The encoder's :meth:`config`."""
        return dict(self._config)

    def train(self, mode: bool = True) -> ResNetSegmentationNet:
        """Set training mode; a frozen encoder (and its batch-norm statistics) stays in evaluation mode."""
        super().train(mode)
        if self.freeze_encoder:
            self.unet.encoder.eval()
        return self

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, 1, W, H)`` → ``(B, out_channels, W, H)``."""
        logits = self.unet(image)
        if self.probabilities:
            return torch.sigmoid(logits)
        return logits


def segmentation_network(encoder: nn.Module, **kwargs: Any) -> nn.Module:
    """:class:`ViTSegmentationNet` for a ViT encoder, :class:`ResNetSegmentationNet` for a ResNet one.

    Args:
        encoder: the (pretrained) image encoder.
        kwargs: the network's arguments; ``feature_size``/``norm_name``/``res_block``/``skip_blocks`` apply to the
            ViT network only, ``decoder_channels`` to the ResNet one (the others are dropped with a debug log).

    Raises:
        TypeError: another encoder type.
    """
    vit_only = {"feature_size", "norm_name", "res_block", "skip_blocks"}
    if isinstance(encoder, ViTImageEncoder):
        return ViTSegmentationNet(encoder, **{k: v for k, v in kwargs.items() if k != "decoder_channels"})
    if isinstance(encoder, ResNetImageEncoder):
        dropped = sorted(vit_only & set(kwargs))
        if dropped:
            logger.debug("ResNet segmentation network: ignoring ViT decoder arguments %s", dropped)
        return ResNetSegmentationNet(encoder, **{k: v for k, v in kwargs.items() if k not in vit_only})
    raise TypeError(
        f"unsupported image encoder {type(encoder).__name__}: expected ViTImageEncoder or ResNetImageEncoder"
    )
