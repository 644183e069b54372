"""Image encoders returning a global vector and patch vectors.

* :class:`ViTImageEncoder`: MONAI's :class:`~monai.networks.nets.ViT` (2-D, one input channel, with a
  ``[CLS]`` token); global = the normalised ``[CLS]`` token or the mean of the patch tokens; patches = the
  ``P`` normalised patch tokens. Presets from ``tiny`` (demo, CI) to ``base`` (ViT-B/16, the paper).
* :class:`ResNetImageEncoder`: MONAI's 2-D ResNet (``resnet50`` at paper scale); global = the pooled last
  stage, patches = the last stage's spatial cells. The wrapped MONAI ``ResNet`` is ``encoder.resnet`` so
  the detection and segmentation bundles reuse it (MONAI's RetinaNet FPN extractor expects a MONAI ResNet).

Both record their constructor arguments in :meth:`config`, which the pretraining bundle writes beside the
exported weights so a downstream bundle can rebuild the same network (see :func:`build_image_encoder`).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from monai.networks.nets import ViT, resnet10, resnet18, resnet34, resnet50, resnet101
from torch import nn

from .outputs import ImageEncoderOutput

__all__ = ["VIT_PRESETS", "ViTImageEncoder", "ResNetImageEncoder", "build_image_encoder"]

VIT_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 64, "mlp_dim": 128, "num_layers": 2, "num_heads": 4},
    "small": {"hidden_size": 384, "mlp_dim": 1536, "num_layers": 12, "num_heads": 6},
    "base": {"hidden_size": 768, "mlp_dim": 3072, "num_layers": 12, "num_heads": 12},
}
"""ViT sizes; ``base`` with ``patch_size=16`` at ``img_size=224`` is ViT-B/16 (196 patches)."""

_RESNETS = {10: resnet10, 18: resnet18, 34: resnet34, 50: resnet50, 101: resnet101}


def _pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    first, second = value
    return (int(first), int(second))


class ViTImageEncoder(nn.Module):
    """A 2-D ViT on MONAI's :class:`~monai.networks.nets.ViT` returning global and patch features.

    Args:
        img_size: input size (int or pair); inputs must match it exactly.
        patch_size: patch side (int or pair).
        preset: one of :data:`VIT_PRESETS`; explicit ``hidden_size``/``mlp_dim``/``num_layers``/``num_heads``
            override it.
        hidden_size: token width.
        mlp_dim: MLP width of each block.
        num_layers: number of transformer blocks.
        num_heads: attention heads.
        in_channels: input channels (1 for radiographs).
        pooling: ``"cls"`` (the ``[CLS]`` token) or ``"mean"`` (mean of the patch tokens) for the global vector.
        dropout_rate: dropout inside the blocks.
        qkv_bias: bias in the attention projections (as in the original ViT).
        return_hidden_states: also return every block's output (for UNETR-style decoders).
        layer_norm_eps: epsilon of every LayerNorm (``None``: MONAI's 1e-5; with ``pretrained``, the source's:
            torchvision's 1e-6, a Hugging Face config's value). Recorded in :meth:`config` when set.
        pretrained: ImageNet ViT weights: a local state-dict file of ``torchvision.models.vit_*``; for ViT-B/16
            (``preset="base"``, ``patch_size=16``) a torchvision weights name (``"IMAGENET1K_V1"``) from
            torchvision's hub cache; or a Hugging Face ``ViTModel`` folder or hub id; ``None`` (default) keeps the
            random initialisation.
        local_files_only: a Hugging Face hub id is read from the local cache only (no download). See
            :mod:`sista_monai.networks.pretrained` (position embeddings are interpolated to ``img_size``).

    Raises:
        ValueError: unknown preset or pooling, an image size not divisible by the patch size, or ImageNet weights
            that do not fit.
        FileNotFoundError: ``pretrained`` names no file and no cached weights.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        preset: str = "base",
        hidden_size: int | None = None,
        mlp_dim: int | None = None,
        num_layers: int | None = None,
        num_heads: int | None = None,
        in_channels: int = 1,
        pooling: str = "cls",
        dropout_rate: float = 0.0,
        qkv_bias: bool = True,
        return_hidden_states: bool = False,
        layer_norm_eps: float | None = None,
        pretrained: str | os.PathLike | None = None,
        local_files_only: bool = True,
    ) -> None:
        super().__init__()
        weights = None if str(pretrained).lower() in ("", "none", "null") else pretrained
        if weights is not None and layer_norm_eps is None:
            from .pretrained import vit_layer_norm_eps

            layer_norm_eps = vit_layer_norm_eps(weights, local_files_only)
        if preset not in VIT_PRESETS:
            raise ValueError(f"preset must be one of {sorted(VIT_PRESETS)}, got {preset!r}")
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        sizes = dict(VIT_PRESETS[preset])
        for key, value in (
            ("hidden_size", hidden_size),
            ("mlp_dim", mlp_dim),
            ("num_layers", num_layers),
            ("num_heads", num_heads),
        ):
            if value is not None:
                sizes[key] = int(value)
        self.img_size = _pair(img_size)
        self.patch_size = _pair(patch_size)
        if any(i % p for i, p in zip(self.img_size, self.patch_size, strict=True)):
            raise ValueError(f"img_size {self.img_size} must be divisible by patch_size {self.patch_size}")
        self.patch_grid = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.pooling = pooling
        self.return_hidden_states = return_hidden_states
        self.out_channels = sizes["hidden_size"]
        self._config = {
            "arch": "vit",
            "img_size": list(self.img_size),
            "patch_size": list(self.patch_size),
            "preset": preset,
            **sizes,
            "in_channels": in_channels,
            "pooling": pooling,
            "dropout_rate": dropout_rate,
            "qkv_bias": qkv_bias,
        }
        if layer_norm_eps is not None:
            self._config["layer_norm_eps"] = float(layer_norm_eps)
        self.vit = ViT(
            in_channels=in_channels,
            img_size=self.img_size,
            patch_size=self.patch_size,
            spatial_dims=2,
            classification=True,
            post_activation=None,
            dropout_rate=dropout_rate,
            qkv_bias=qkv_bias,
            hidden_size=sizes["hidden_size"],
            mlp_dim=sizes["mlp_dim"],
            num_layers=sizes["num_layers"],
            num_heads=sizes["num_heads"],
        )
        # The [CLS] token is kept; MONAI's classification head is not part of an encoder.
        del self.vit.classification_head
        nn.init.trunc_normal_(self.vit.cls_token, std=0.02)
        # MONAI's TransformerBlock always builds a cross-attention LayerNorm, unused without cross-attention;
        # freezing it keeps MONAI's state-dict layout while DDP (which rejects unused trainable parameters)
        # and the optimiser ignore it.
        for block in self.vit.blocks:
            if not block.with_cross_attention:
                block.norm_cross_attn.requires_grad_(False)
        if layer_norm_eps is not None:
            for module in self.vit.modules():
                if isinstance(module, nn.LayerNorm):
                    module.eps = float(layer_norm_eps)
        if weights is not None:
            from .pretrained import load_torchvision_vit

            load_torchvision_vit(self, weights, local_files_only)

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this architecture (written to the exported encoder's sidecar)."""
        return dict(self._config)

    def forward(self, image: torch.Tensor) -> ImageEncoderOutput:
        """Encode ``(B, C, *img_size)`` images."""
        if tuple(image.shape[2:]) != self.img_size:
            raise ValueError(
                f"ViTImageEncoder expects inputs of spatial size {self.img_size}, got {tuple(image.shape[2:])}"
            )
        tokens = self.vit.patch_embedding(image)
        tokens = torch.cat((self.vit.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        hidden_states = []
        for block in self.vit.blocks:
            tokens = block(tokens)
            if self.return_hidden_states:
                hidden_states.append(tokens)
        tokens = self.vit.norm(tokens)
        patches = tokens[:, 1:]
        global_features = tokens[:, 0] if self.pooling == "cls" else patches.mean(dim=1)
        return ImageEncoderOutput(global_features, patches, self.patch_grid, tuple(hidden_states))


class ResNetImageEncoder(nn.Module):
    """A 2-D MONAI ResNet returning the pooled last stage and its spatial cells as patches.

    Args:
        depth: 10, 18, 34, 50 (paper) or 101.
        img_size: nominal input size, recorded in :meth:`config` (any size divisible by 32 works).
        in_channels: input channels.
        conv1_stride: stride of the first convolution (2, as in the ImageNet ResNets; MONAI's default is 1).
        pretrained: torchvision ImageNet weights: a local state-dict file or a weights name (``"IMAGENET1K_V2"``,
            from torchvision's hub cache); ``None`` (default) keeps the random initialisation. See
            :mod:`sista_monai.networks.pretrained` for the key map and why the kernels are transposed. Not part of
            :meth:`config` (it initialises, it does not change the architecture).

    Raises:
        ValueError: unsupported depth, or ImageNet weights that do not fit.
        FileNotFoundError: ``pretrained`` names no file and no cached weights.
    """

    def __init__(
        self,
        depth: int = 50,
        img_size: int | tuple[int, int] = 224,
        in_channels: int = 1,
        conv1_stride: int = 2,
        pretrained: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if depth not in _RESNETS:
            raise ValueError(f"depth must be one of {sorted(_RESNETS)}, got {depth}")
        self.img_size = _pair(img_size)
        self.resnet = _RESNETS[depth](
            spatial_dims=2, n_input_channels=in_channels, feed_forward=False, conv1_t_stride=conv1_stride, num_classes=1
        )
        reduction = 16 * conv1_stride
        self.patch_grid = (self.img_size[0] // reduction, self.img_size[1] // reduction)
        self.out_channels = 2048 if depth >= 50 else 512
        self._config = {
            "arch": "resnet",
            "depth": depth,
            "img_size": list(self.img_size),
            "in_channels": in_channels,
            "conv1_stride": conv1_stride,
        }
        if pretrained is not None and str(pretrained).lower() not in ("", "none", "null"):
            if conv1_stride != 2:
                raise ValueError("ImageNet ResNet weights need conv1_stride=2, as torchvision's ResNets have")
            from .pretrained import load_torchvision_resnet

            load_torchvision_resnet(self.resnet, pretrained, depth, in_channels)

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this architecture."""
        return dict(self._config)

    def forward(self, image: torch.Tensor) -> ImageEncoderOutput:
        """Encode ``(B, C, W, H)`` images."""
        net = self.resnet
        x = net.act(net.bn1(net.conv1(image)))
        if not net.no_max_pool:
            x = net.maxpool(x)
        features = net.layer4(net.layer3(net.layer2(net.layer1(x))))
        global_features = net.avgpool(features).flatten(1)
        patches = features.flatten(2).transpose(1, 2)
        return ImageEncoderOutput(global_features, patches, (int(features.shape[2]), int(features.shape[3])))


def build_image_encoder(config: dict[str, Any]) -> nn.Module:
    """Rebuild an encoder from its :meth:`config` dictionary (``arch`` is ``"vit"`` or ``"resnet"``).

    Raises:
        ValueError: unknown ``arch``.
    """
    kwargs = dict(config)
    arch = kwargs.pop("arch", None)
    if arch == "vit":
        return ViTImageEncoder(**kwargs)
    if arch == "resnet":
        return ResNetImageEncoder(**kwargs)
    raise ValueError(f"unknown image encoder arch {arch!r} (expected 'vit' or 'resnet')")
