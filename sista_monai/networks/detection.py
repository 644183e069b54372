"""RSNA pneumonia detection on a pretrained image encoder: MONAI's 2-D RetinaNet, its detector and engines.

Networks (image in, RetinaNet head maps out; the encoder's modules are shared, so its state-dict keys stay
under ``feature_extractor.vit.*`` or ``feature_extractor.fpn.body.*``):

* ViT encoder: :class:`ViTSimpleFeaturePyramid`, a ViTDet-style simple feature pyramid (Li et al., 2022) built
  from the final normed patch tokens alone: stride 8 by a 2x transposed convolution, stride 16 as is, stride
  32 by max-pooling, each projected to ``fpn_channels`` by a 1x1 and a 3x3 convolution with group norm.
* ResNet encoder: MONAI's :func:`~monai.apps.detection.networks.retinanet_network.resnet_fpn_feature_extractor`
  on the pretrained ``encoder.resnet`` (layers 1-3 and an extra max-pooled level), wrapped by
  :class:`ResNetFPNFeatures`.

Both feed MONAI's :class:`~monai.apps.detection.networks.retinanet_network.RetinaNet` (as
:class:`SISTARetinaNet`, which adds the ``encoder`` handle for the optimiser's parameter groups and keeps a
frozen encoder in evaluation mode). :func:`build_detector` wraps it in MONAI's
:class:`~monai.apps.detection.networks.retinanet_detector.RetinaNetDetector` with shape-based anchors, the
ATSS matcher and hard-negative sampling; :class:`DetectionTrainer` and :class:`DetectionEvaluator` are MONAI's
supervised engines with the iteration replaced by the detector's training and inference calls (the
detector takes a list of targets, which the stock engines cannot pass).

Boxes are MONAI's StandardMode ``(x1, y1, x2, y2)`` in the ``(W, H)`` layout of the loaded image (spatial
dimension 0 is the DICOM column, x). The datalists keep RSNA's ``[x, y, width, height]`` in original pixels;
the bundle's transforms convert them with MONAI's box transforms (``ConvertBoxToStandardModed``,
``ClipBoxToImaged``, ``RandFlipBoxd``, ``RandZoomBoxd``), :class:`BoxesToImagePixelsd` carries them through the
resize, pad and crop by the image's affine, and :class:`BoxesToOriginalPixelsd` maps predictions back to the
original DICOM pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.apps.detection.networks.retinanet_network import RetinaNet, resnet_fpn_feature_extractor
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from torch import nn

from sista_monai.config import as_flag

from .image_encoders import ResNetImageEncoder, ViTImageEncoder

__all__ = [
    "ViTSimpleFeaturePyramid",
    "ResNetFPNFeatures",
    "SISTARetinaNet",
    "detection_network",
    "build_detector",
]

logger = logging.getLogger(__name__)


class ViTSimpleFeaturePyramid(nn.Module):
    """ViTDet-style simple feature pyramid on a pretrained :class:`~sista_monai.networks.ViTImageEncoder`.

    Only the last feature map of the plain ViT is used (ViTDet's finding: no hierarchical backbone is needed);
    each level is made from it by resampling (``scale`` 2: a 2x transposed convolution; 1: none; 0.5: 2x2 max
    pooling; 4: two transposed convolutions) and projected to ``out_channels`` (1x1 and 3x3 convolutions, each
    with group norm).

    Args:
        encoder: the ViT encoder (its ``vit`` module is shared, not copied).
        out_channels: channels of every pyramid level (RetinaNet's ``feature_map_channels``).
        scales: resampling factor of each level relative to the patch grid, finest first (strides 8, 16, 32 for
            16-pixel patches by default).
        freeze_encoder: frozen ViT (kept in evaluation mode, no gradients) or fine-tuning.

    Raises:
        TypeError: not a ViT encoder.
        ValueError: an unsupported scale.
    """

    def __init__(
        self,
        encoder: nn.Module,
        out_channels: int = 64,
        scales: Sequence[float] = (2.0, 1.0, 0.5),
        freeze_encoder: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(encoder, ViTImageEncoder):
            raise TypeError(f"ViTSimpleFeaturePyramid needs a ViTImageEncoder, got {type(encoder).__name__}")
        self.vit = encoder.vit
        self.grid = tuple(int(g) for g in encoder.patch_grid)
        self.hidden_size = int(encoder.out_channels)
        self.out_channels = int(out_channels)
        self.scales = tuple(float(s) for s in scales)
        self.strides = tuple(int(round(encoder.patch_size[0] / s)) for s in self.scales)
        self.levels = nn.ModuleList([self._level(scale) for scale in self.scales])
        self.freeze_encoder = as_flag(freeze_encoder, "freeze_encoder")
        if self.freeze_encoder:
            self.vit.requires_grad_(False)

    def _norm(self, channels: int) -> nn.Module:
        return nn.GroupNorm(min(32, channels // 4) or 1, channels)

    def _level(self, scale: float) -> nn.Sequential:
        dim = self.hidden_size
        layers: list[nn.Module] = []
        if scale == 4.0:
            layers += [nn.ConvTranspose2d(dim, dim // 2, 2, 2), self._norm(dim // 2), nn.GELU()]
            layers += [nn.ConvTranspose2d(dim // 2, dim // 4, 2, 2)]
            dim //= 4
        elif scale == 2.0:
            layers += [nn.ConvTranspose2d(dim, dim // 2, 2, 2)]
            dim //= 2
        elif scale == 0.5:
            layers += [nn.MaxPool2d(2, 2)]
        elif scale != 1.0:
            raise ValueError(f"pyramid scales must be among 4, 2, 1 and 0.5, got {scale}")
        out = self.out_channels
        layers += [
            nn.Conv2d(dim, out, 1, bias=False),
            self._norm(out),
            nn.Conv2d(out, out, 3, padding=1, bias=False),
            self._norm(out),
        ]
        return nn.Sequential(*layers)

    def train(self, mode: bool = True) -> ViTSimpleFeaturePyramid:
        """Set training mode; a frozen encoder always stays in evaluation mode."""
        super().train(mode)
        if self.freeze_encoder:
            self.vit.eval()
        return self

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """``(B, C, W, H)`` → one ``(B, out_channels, W / stride, H / stride)`` map per level, finest first."""
        tokens = self.vit.patch_embedding(image)
        tokens = torch.cat((self.vit.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        for block in self.vit.blocks:
            tokens = block(tokens)
        patches = self.vit.norm(tokens)[:, 1:]
        grid = patches.reshape(patches.shape[0], self.grid[0], self.grid[1], self.hidden_size).permute(0, 3, 1, 2)
        grid = grid.contiguous()
        return [level(grid) for level in self.levels]


class ResNetFPNFeatures(nn.Module):
    """MONAI's ResNet-FPN feature extractor on a pretrained :class:`~sista_monai.networks.ResNetImageEncoder`.

    Args:
        encoder: the ResNet encoder (its ``resnet`` modules are shared).
        returned_layers: ResNet layers feeding the FPN (``len + 1`` levels with the extra max-pooled one).
        freeze_encoder: frozen backbone (no gradients; batch-norm statistics kept) or fine-tuning.
    """

    def __init__(
        self, encoder: nn.Module, returned_layers: Sequence[int] = (1, 2, 3), freeze_encoder: bool = True
    ) -> None:
        super().__init__()
        if not isinstance(encoder, ResNetImageEncoder):
            raise TypeError(f"ResNetFPNFeatures needs a ResNetImageEncoder, got {type(encoder).__name__}")
        self.freeze_encoder = as_flag(freeze_encoder, "freeze_encoder")
        self.returned_layers = tuple(int(i) for i in returned_layers)
        self.fpn = resnet_fpn_feature_extractor(
            encoder.resnet,
            spatial_dims=2,
            pretrained_backbone=True,
            returned_layers=list(self.returned_layers),
            trainable_backbone_layers=0 if self.freeze_encoder else 5,
        )
        self.out_channels = int(self.fpn.out_channels)
        conv1_stride = int(encoder.config()["conv1_stride"])
        self.size_divisible = 2 * conv1_stride * 2 ** max(self.returned_layers)
        self.strides = tuple(2 * conv1_stride * 2 ** (i - 1) for i in self.returned_layers) + (self.size_divisible,)

    def train(self, mode: bool = True) -> ResNetFPNFeatures:
        """Set training mode; a frozen backbone (and its batch-norm statistics) stays in evaluation mode."""
        super().train(mode)
        if self.freeze_encoder:
            self.fpn.body.eval()
        return self

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """``(B, C, W, H)`` → the FPN levels, finest first."""
        return list(self.fpn(image).values())


class SISTARetinaNet(RetinaNet):
    """MONAI's :class:`RetinaNet` with the pretrained encoder's handle and configuration.

    Args:
        feature_extractor: :class:`ViTSimpleFeaturePyramid` or :class:`ResNetFPNFeatures`.
        encoder_config: the encoder's :meth:`config` (written beside exported weights).
        kwargs: :class:`RetinaNet` arguments (``spatial_dims``, ``num_classes``, ``num_anchors``, ``size_divisible``).
    """

    def __init__(self, feature_extractor: nn.Module, encoder_config: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(feature_extractor=feature_extractor, **kwargs)
        self._config = dict(encoder_config)

    __jit_unused_properties__ = ["encoder"]

    @property
    def encoder(self) -> nn.Module:
        """The pretrained backbone (for :func:`~sista_monai.engines.encoder_parameter_groups`)."""
        extractor = self.feature_extractor
        if isinstance(extractor, ViTSimpleFeaturePyramid):
            return extractor.vit
        if isinstance(extractor, ResNetFPNFeatures):
            return extractor.fpn.body
        raise TypeError(f"no pretrained encoder in a {type(extractor).__name__} feature extractor")

    def config(self) -> dict[str, Any]:
        """The encoder's :meth:`config`."""
        return dict(self._config)


def detection_network(
    encoder: nn.Module,
    num_classes: int = 1,
    num_anchors: int = 3,
    freeze_encoder: bool = True,
    fpn_channels: int = 64,
    scales: Sequence[float] = (2.0, 1.0, 0.5),
    returned_layers: Sequence[int] = (1, 2, 3),
) -> SISTARetinaNet:
    """A 2-D RetinaNet on the encoder: the simple feature pyramid for a ViT, MONAI's ResNet-FPN for a ResNet.

    Args:
        encoder: the (pretrained) image encoder.
        num_classes: box classes (1: lung opacity).
        num_anchors: anchors per location (the anchor generator's number of shapes).
        freeze_encoder: frozen encoder (the MGCA protocol) or fine-tuning.
        fpn_channels: channels of the ViT pyramid (the ResNet FPN has MONAI's 256).
        scales: ViT pyramid levels (see :class:`ViTSimpleFeaturePyramid`).
        returned_layers: ResNet layers feeding the FPN.

    Returns:
        The network with ``use_list_output=True`` (the classification maps of every level, then the
        box-regression maps: MONAI's TorchScript-compatible form, so ``monai.bundle ckpt_export`` scripts it;
        the detector accepts both forms).

    Raises:
        TypeError: another encoder type.
        ValueError: a ViT whose image size is not a multiple of the coarsest pyramid stride (32 by default).
    """
    if isinstance(encoder, ViTImageEncoder):
        pyramid = ViTSimpleFeaturePyramid(encoder, fpn_channels, scales, freeze_encoder)
        extractor: nn.Module = pyramid
        size_divisible = max(pyramid.strides)
        if any(int(s) % size_divisible for s in encoder.img_size):
            # the detector pads its input to a multiple of the coarsest stride; the ViT takes one size only
            raise ValueError(
                f"the ViT detector needs an image size divisible by {size_divisible} (its coarsest pyramid stride), "
                f"got {tuple(encoder.img_size)}"
            )
    elif isinstance(encoder, ResNetImageEncoder):
        extractor = ResNetFPNFeatures(encoder, returned_layers, freeze_encoder)
        size_divisible = extractor.size_divisible
    else:
        raise TypeError(
            f"unsupported image encoder {type(encoder).__name__}: expected ViTImageEncoder or ResNetImageEncoder"
        )
    return SISTARetinaNet(
        extractor,
        encoder.config(),
        spatial_dims=2,
        num_classes=int(num_classes),
        num_anchors=int(num_anchors),
        size_divisible=size_divisible,
        use_list_output=True,
    )


def build_detector(
    network: nn.Module,
    anchor_shapes: Sequence[Sequence[float]] = ((16, 16), (12, 20), (20, 12)),
    feature_map_scales: Sequence[float] | None = None,
    atss_candidates: int = 4,
    sampler_batch_size: int = 64,
    sampler_positive_fraction: float = 0.3,
    sampler_min_negatives: int = 16,
    sampler_pool_size: float = 20,
    score_threshold: float = 0.02,
    nms_threshold: float = 0.3,
    detections_per_image: int = 100,
    box_key: str = "box",
    label_key: str = "label",
) -> RetinaNetDetector:
    """MONAI's :class:`RetinaNetDetector` around the network, set up for lung opacities.

    Args:
        network: a RetinaNet (possibly DDP-wrapped; its attributes are read from the unwrapped module).
        anchor_shapes: ``(width, height)`` anchors in network pixels at the stride-8 level; level ``i`` has them
            times ``feature_map_scales[i]`` (defaults: 12-24 px at stride 8 up to 48-96 px at stride 32,
            covering the demo's and RSNA's opacities at 128 pixels).
        feature_map_scales: anchor scale of each pyramid level; ``None``: each level's stride / 8 (read from
            the feature extractor's ``strides``), so the anchors have the same size in pixels for both encoders.
        atss_candidates: ATSS matcher candidates per level.
        sampler_batch_size: anchors sampled per image for the classification loss (hard negatives).
        sampler_positive_fraction: positive share of the sampled anchors.
        sampler_min_negatives: negatives sampled even on images without any box.
        sampler_pool_size: hard negatives are drawn from this many times as many top-scoring negatives.
        score_threshold: inference: boxes scoring below it are dropped before NMS.
        nms_threshold: inference: IoU of non-maximum suppression.
        detections_per_image: inference: boxes kept per image.
        box_key: key of the boxes in targets and predictions.
        label_key: key of the class indices (scores under ``<label_key>_scores``).
    """
    module = cast(RetinaNet, getattr(network, "module", network))
    if feature_map_scales is None:
        # the project's feature extractors hold their strides; nn.Module types an attribute as Tensor | Module
        strides = cast("Sequence[int]", module.feature_extractor.strides)
        feature_map_scales = [stride / 8.0 for stride in strides]
    anchors = AnchorGeneratorWithAnchorShape(
        feature_map_scales=tuple(float(s) for s in feature_map_scales),
        base_anchor_shapes=tuple(tuple(float(v) for v in shape) for shape in anchor_shapes),
    )
    detector = RetinaNetDetector(
        network,
        anchors,
        spatial_dims=module.spatial_dims,
        num_classes=module.num_classes,
        size_divisible=module.size_divisible,
        cls_key=module.cls_key,
        box_reg_key=module.box_reg_key,
    )
    detector.set_target_keys(box_key=box_key, label_key=label_key)
    detector.set_atss_matcher(num_candidates=int(atss_candidates), center_in_gt=False)
    detector.set_hard_negative_sampler(
        batch_size_per_image=int(sampler_batch_size),
        positive_fraction=float(sampler_positive_fraction),
        min_neg=int(sampler_min_negatives),
        pool_size=float(sampler_pool_size),
    )
    detector.set_box_selector_parameters(
        score_thresh=float(score_threshold),
        topk_candidates_per_level=1000,
        nms_thresh=float(nms_threshold),
        detections_per_img=int(detections_per_image),
    )
    return detector
