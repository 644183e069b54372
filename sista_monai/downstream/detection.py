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

import contextlib
import json
import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.apps.detection.networks.retinanet_network import RetinaNet, resnet_fpn_feature_extractor
from monai.apps.detection.transforms.box_ops import apply_affine_to_boxes
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.box_utils import clip_boxes_to_image
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.transforms import MapTransform
from monai.utils import CommonKeys as Keys
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

from sista_monai.engines.trainer import NonFiniteLossError
from sista_monai.handlers.export import atomic_write_bytes
from sista_monai.networks import ResNetImageEncoder, ViTImageEncoder

from .config import as_flag
from .inference import source_file

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = [
    "ViTSimpleFeaturePyramid",
    "ResNetFPNFeatures",
    "SISTARetinaNet",
    "detection_network",
    "build_detector",
    "detection_datalist",
    "map_boxes",
    "BoxesToImagePixelsd",
    "BoxesToOriginalPixelsd",
    "DetectionTrainer",
    "DetectionEvaluator",
    "DetectionJSONWriter",
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
        """The pretrained backbone (for :func:`~sista_monai.downstream.encoder_parameter_groups`)."""
        extractor = self.feature_extractor
        return extractor.vit if isinstance(extractor, ViTSimpleFeaturePyramid) else extractor.fpn.body

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
        extractor: nn.Module = ViTSimpleFeaturePyramid(encoder, fpn_channels, scales, freeze_encoder)
        size_divisible = max(extractor.strides)
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
    module = getattr(network, "module", network)
    if feature_map_scales is None:
        feature_map_scales = [stride / 8.0 for stride in module.feature_extractor.strides]
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


def _is_xywh(box: Any) -> bool:
    try:
        values = np.asarray(box, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return values.shape == (4,) and bool(np.isfinite(values).all()) and values[2] > 0 and values[3] > 0


def detection_datalist(
    datalist: str | os.PathLike, key: str, box_key: str = "box", label_key: str = "label"
) -> list[dict[str, Any]]:
    """``[{"image": path, "box": [[x, y, w, h], ...], "label": [0, ...], "id": ...}, ...]`` of a split.

    The demo and ``prepare rsna`` datalists hold ``{"id", "image", "boxes", "labels"}`` items with image paths
    relative to the datalist's folder and boxes as RSNA's ``[x, y, width, height]`` in original pixels (the
    datalist's ``box_mode``).

    Raises:
        KeyError: the split is not in the datalist.
        ValueError: the datalist's box mode is not ``xywh``, or items lack their image, have a box that is not
            four finite numbers with positive width and height, or a label count that differs from their box
            count (one message listing every such item by position and id).
    """
    path = Path(datalist)
    content = json.loads(path.read_text())
    if key not in content:
        raise KeyError(
            f"{path.name} has no {key!r} split (has {sorted(k for k, v in content.items() if isinstance(v, list))})"
        )
    mode = content.get("box_mode", "xywh")
    if mode != "xywh":
        raise ValueError(f"{path.name}: box_mode must be 'xywh' (RSNA's [x, y, width, height]), got {mode!r}")
    items, problems = [], []
    for index, item in enumerate(content[key]):
        where = f"{path.name} {key}[{index}] (id {item.get('id', '?')})"
        if "image" not in item:
            problems.append(f"{where}: no 'image'")
            continue
        boxes = item.get("boxes", [])
        labels = item.get("labels", [0] * len(boxes))
        if len(labels) != len(boxes):
            problems.append(f"{where}: {len(boxes)} boxes but {len(labels)} labels")
            continue
        bad = [box for box in boxes if not _is_xywh(box)]
        if bad:
            problems.append(f"{where}: box {bad[0]} is not [x, y, width, height] with positive width and height")
            continue
        entry = {k: v for k, v in item.items() if k not in ("image", "boxes", "labels")}
        entry["image"] = str(path.parent / item["image"])
        entry[box_key] = [[float(v) for v in box] for box in boxes]
        entry[label_key] = [int(v) for v in labels]
        items.append(entry)
    if problems:
        raise ValueError(f"{len(problems)} bad item(s) in {path.name}:\n  " + "\n  ".join(problems))
    return items


def _affine_2d(affine: Any) -> torch.Tensor:
    """The 3x3 affine of a 2-D image (MONAI's MetaTensor carries a 4x4 one for 2-D images)."""
    matrix = torch.as_tensor(np.asarray(affine), dtype=torch.float64)
    if matrix.shape == (3, 3):
        return matrix
    if matrix.shape == (4, 4):
        return matrix[[0, 1, 3]][:, [0, 1, 3]]
    raise ValueError(f"expected a 3x3 or 4x4 affine, got shape {tuple(matrix.shape)}")


def map_boxes(boxes: Any, matrix: torch.Tensor) -> torch.Tensor:
    """Map ``(N, 4)`` StandardMode boxes through a 3x3 index-to-index affine, exactly at the pixel edges.

    MONAI's affines map pixel *centres* (index ``k`` is the centre of pixel ``k``) while box coordinates are
    pixel *edges* (pixel ``k`` spans ``[k, k + 1]``); the edges are shifted by half a pixel into centre
    coordinates, mapped with MONAI's :func:`apply_affine_to_boxes` and shifted back, so that a resize by ``s``
    maps the edge ``x`` to ``s * x`` and not to ``s * x + (s - 1) / 2``.
    """
    boxes_t = torch.as_tensor(np.asarray(boxes) if not isinstance(boxes, torch.Tensor) else boxes, dtype=torch.float64)
    boxes_t = boxes_t.reshape(-1, 4)
    if boxes_t.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    mapped = apply_affine_to_boxes(boxes_t - 0.5, matrix.to(torch.float64)) + 0.5
    return mapped.to(torch.float32)


class _BoxGridTransform(MapTransform):
    """Shared part of :class:`BoxesToImagePixelsd` and :class:`BoxesToOriginalPixelsd`."""

    def __init__(self, keys: KeysCollection, image_key: str = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key

    def _affines(self, d: Mapping[Hashable, Any]) -> tuple[torch.Tensor, torch.Tensor, MetaTensor]:
        image = d[self.image_key]
        if not isinstance(image, MetaTensor):
            raise TypeError(f"{self.image_key!r} must be a MetaTensor carrying its affines, got {type(image).__name__}")
        if "original_affine" not in image.meta:
            raise ValueError(f"{self.image_key!r} has no 'original_affine' metadata: load it with LoadChestXrayd")
        return _affine_2d(image.meta["original_affine"]), _affine_2d(image.affine), image


class BoxesToImagePixelsd(_BoxGridTransform):
    """Map boxes to the pixels of the image as transformed so far, through the image's affine.

    Place it after image-only spatial transforms (resize, pad, crop): the image's affine has followed them, and
    the boxes are mapped through ``inv(affine) @ source`` (:func:`map_boxes`, exact at pixel edges), where
    ``source`` is the grid the boxes are given in:

    * ``"loaded"``: the loaded image's pixels (its ``original_affine``, as ``LoadChestXrayd`` records it);
    * ``"plain"``: the pixels of the plain tensor the spatial transforms started from. MONAI's
      ``PersistentDataset`` returns cached items as plain tensors (their metadata is not cached), and a crop of
      a plain tensor starts from the identity affine: the bundles map the boxes to the padded image's pixels
      before the cache (``"loaded"``), drop the metadata there, and map them through the random or centre crop
      after it (``"plain"``).

    MONAI's ``AffineBoxToWorldCoordinated``/``AffineBoxToImageCoordinated`` would be the stock pair, but they
    apply the 4x4 affine of a 2-D MetaTensor to 2-D boxes as-is (a shape error) and map box edges as pixel
    centres (half a pixel off after a resize), hence this transform.

    Args:
        keys: the box keys (``(N, 4)`` StandardMode, in the ``source`` grid's pixels).
        image_key: the transformed image.
        source: ``"loaded"`` or ``"plain"``.
        allow_missing_keys: skip absent keys.

    Raises:
        ValueError: an unknown ``source``.
    """

    SOURCES = ("loaded", "plain")

    def __init__(
        self, keys: KeysCollection, image_key: str = "image", source: str = "loaded", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, image_key, allow_missing_keys)
        if source not in self.SOURCES:
            raise ValueError(f"source must be one of {self.SOURCES}, got {source!r}")
        self.source = source

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.source == "loaded":
            reference, current, _ = self._affines(d)
        else:
            image = d[self.image_key]
            if not isinstance(image, MetaTensor):
                raise TypeError(
                    f"{self.image_key!r} must be a MetaTensor after a spatial transform, got {type(image).__name__}"
                )
            current = _affine_2d(image.affine)
            reference = torch.eye(3, dtype=torch.float64)
        matrix = torch.linalg.inv(current) @ reference
        for key in self.key_iterator(d):
            d[key] = map_boxes(d[key], matrix)
        return d


class BoxesToOriginalPixelsd(_BoxGridTransform):
    """Map boxes from the preprocessed image's pixels back to the loaded image's pixels (inference).

    The inverse of :class:`BoxesToImagePixelsd`: ``inv(original_affine) @ affine``, then clipped to the
    original ``spatial_shape`` (``clip``).

    Args:
        keys: the box keys (``(N, 4)`` StandardMode, in the preprocessed image's pixels).
        image_key: the preprocessed image.
        clip: clip the boxes to the original image.
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self, keys: KeysCollection, image_key: str = "image", clip: bool = True, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, image_key, allow_missing_keys)
        self.clip = clip

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        original, current, image = self._affines(d)
        matrix = torch.linalg.inv(original) @ current
        shape = image.meta.get("spatial_shape")
        for key in self.key_iterator(d):
            mapped = map_boxes(d[key], matrix)
            if self.clip and shape is not None and mapped.shape[0]:
                size = [int(s) for s in np.asarray(shape).reshape(-1)[:2]]
                mapped, _ = clip_boxes_to_image(mapped, size, remove_empty=False)
            d[key] = mapped
        return d


def _as_plain_tensor(value: Any, device: torch.device | str | None, dtype: torch.dtype | None = None) -> torch.Tensor:
    tensor = value.as_tensor() if isinstance(value, MetaTensor) else torch.as_tensor(value)
    return tensor.to(device=device, dtype=dtype) if dtype is not None else tensor.to(device=device)


def _split_batch(engine: Any, batch: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Stack the images of a list batch (``no_collation``) and build the detector's targets."""
    if not isinstance(batch, (list, tuple)) or not batch:
        raise ValueError("the detection engines need a non-empty list batch (DataLoader collate_fn=no_collation)")
    device = engine.state.device
    images = torch.stack([_as_plain_tensor(item[Keys.IMAGE], device, torch.float32) for item in batch])
    targets = []
    for item in batch:
        if engine.box_key in item:
            targets.append(
                {
                    engine.box_key: _as_plain_tensor(item[engine.box_key], device, torch.float32).reshape(-1, 4),
                    engine.label_key: _as_plain_tensor(item[engine.label_key], device, torch.long).reshape(-1),
                }
            )
    return images, targets


class DetectionTrainer(SupervisedTrainer):
    """MONAI's :class:`SupervisedTrainer` training a :class:`RetinaNetDetector`.

    The data loader yields lists of per-image dicts (``collate_fn=no_collation``) with ``image`` (all of one
    size) and the target boxes and labels; each iteration calls ``detector(images, targets)`` in training mode,
    weights MONAI's classification (focal-free BCE on sampled anchors) and box-regression losses and steps the
    optimiser. ``engine.state.output`` holds ``loss`` and each term (detached). A non-finite loss raises
    :class:`~sista_monai.engines.trainer.NonFiniteLossError` naming the iteration and the terms.

    Args:
        detector: the detector; its ``network`` must be the trainer's ``network``.
        loss_weights: weight of each of the detector's loss terms (``classification``, ``box_regression``).
        box_key: target boxes in each item.
        label_key: target labels in each item.
        args, kwargs: :class:`SupervisedTrainer` arguments (``loss_function`` may be omitted).
    """

    def __init__(
        self,
        *args: Any,
        detector: RetinaNetDetector,
        loss_weights: Mapping[str, float] | None = None,
        box_key: str = "box",
        label_key: str = "label",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("loss_function", nn.Identity())
        kwargs.setdefault("prepare_batch", _identity_batch)
        kwargs.setdefault("decollate", False)
        super().__init__(*args, **kwargs)
        if detector.network is not self.network:
            raise ValueError("the detector must wrap the trainer's network")
        self.detector = detector
        self.box_key = box_key
        self.label_key = label_key
        self.loss_weights = {detector.cls_key: 1.0, detector.box_reg_key: 1.0, **dict(loss_weights or {})}

    def _iteration(self, engine: DetectionTrainer, batchdata: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        images, targets = _split_batch(engine, batchdata)
        if len(targets) != len(batchdata):
            raise ValueError(f"every training item needs {engine.box_key!r} and {engine.label_key!r}")
        engine.detector.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        device_type = torch.device(engine.state.device).type if engine.state.device is not None else "cpu"
        autocast = torch.autocast(device_type, **engine.amp_kwargs) if engine.amp else contextlib.nullcontext()
        try:
            with autocast:
                losses = engine.detector(images, targets)
        except ValueError as error:  # MONAI's RetinaNet heads refuse non-finite maps themselves
            if "NaN or Inf" not in str(error):
                raise
            raise NonFiniteLossError(
                f"non-finite detection head output at iteration {engine.state.iteration} (epoch {engine.state.epoch}): {error}"
            ) from error
        engine.state.output = {Keys.IMAGE: images, Keys.LABEL: targets}
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        loss = sum(engine.loss_weights.get(k, 1.0) * v.float() for k, v in losses.items())
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        if not torch.isfinite(loss.detach()):
            terms = ", ".join(f"{k}={float(v):.6g}" for k, v in losses.items())
            raise NonFiniteLossError(
                f"non-finite detection loss at iteration {engine.state.iteration} (epoch {engine.state.epoch}): {terms}"
            )
        if (
            engine.amp
            and engine.scaler is not None
            and device_type == "cuda"
            and engine.amp_kwargs.get("dtype", torch.float16) == torch.float16
        ):
            engine.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        output: dict[str, Any] = {f"loss_{k}": v.detach() for k, v in losses.items()}
        output[Keys.LOSS] = loss.detach()
        engine.state.output = output
        return output


def _identity_batch(batchdata: Any, device: Any = None, non_blocking: bool = False, **kwargs: Any) -> Any:
    """``prepare_batch`` of the detection engines: the list batch is split in the iteration itself."""
    return batchdata


class DetectionEvaluator(SupervisedEvaluator):
    """MONAI's :class:`SupervisedEvaluator` running a :class:`RetinaNetDetector` in inference mode.

    ``engine.state.output`` is a list with one dict per image: ``pred_box`` ``(N, 4)``, ``pred_label`` ``(N,)``,
    ``pred_score`` ``(N,)`` (on the CPU), ``image`` (the input item's, with its metadata) and, when the item has
    targets, its ``box`` and ``label``. Run it with ``decollate=False``: the output is already per image,
    and a ``postprocessing`` transform runs on each (batch item, output item) pair.

    Args:
        detector: the detector; its ``network`` must be the evaluator's ``network``.
        box_key: target boxes in each item.
        label_key: target labels in each item.
        args, kwargs: :class:`SupervisedEvaluator` arguments.
    """

    def __init__(
        self, *args: Any, detector: RetinaNetDetector, box_key: str = "box", label_key: str = "label", **kwargs: Any
    ) -> None:
        kwargs.setdefault("prepare_batch", _identity_batch)
        kwargs.setdefault("decollate", False)
        super().__init__(*args, **kwargs)
        if detector.network is not self.network:
            raise ValueError("the detector must wrap the evaluator's network")
        self.detector = detector
        self.box_key = box_key
        self.label_key = label_key

    def _iteration(self, engine: DetectionEvaluator, batchdata: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        images, targets = _split_batch(engine, batchdata)
        engine.detector.eval()
        device_type = torch.device(engine.state.device).type if engine.state.device is not None else "cpu"
        autocast = torch.autocast(device_type, **engine.amp_kwargs) if engine.amp else contextlib.nullcontext()
        with engine.mode(engine.network), autocast:
            detections = engine.detector(images, use_inferer=False)
        score_key = engine.detector.pred_score_key
        outputs: list[dict[str, Any]] = []
        for index, (item, found) in enumerate(zip(batchdata, detections, strict=True)):
            output: dict[str, Any] = {
                Keys.IMAGE: item[Keys.IMAGE],
                "pred_box": found[engine.detector.target_box_key].detach().float().cpu(),
                "pred_label": found[engine.detector.target_label_key].detach().long().cpu(),
                "pred_score": found[score_key].detach().float().cpu(),
            }
            if len(targets) == len(batchdata):
                output[engine.box_key] = targets[index][engine.box_key].cpu()
                output[engine.label_key] = targets[index][engine.label_key].cpu()
            outputs.append(output)
        engine.state.batch = [dict(item) for item in batchdata]
        engine.state.output = outputs
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class DetectionJSONWriter:
    """Write ``<output_dir>/<input file stem>.json`` with the boxes, scores and labels found in every image.

    Each file holds ``{"image": <input file name>, "width", "height", "box_mode": "xyxy", "boxes": [[x1, y1, x2,
    y2], ...], "boxes_xywh": [[x, y, width, height], ...], "scores": [...], "labels": [...], "label_names": [...]}``
    in the input file's pixel coordinates (x: column, y: row, as RSNA's labels), sorted by decreasing score.
    Attach to the inference evaluator after the post-processing that maps the boxes back
    (:class:`BoxesToOriginalPixelsd`).

    Args:
        output_dir: the output folder (created when missing).
        class_names: ``{"0": "Lung Opacity"}``.
        box_key, score_key, label_key: keys of the prediction in each output item.
        image_key: key of the loaded image in each batch item (its metadata names the file).
        extra: further entries written to every file.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Mapping[str, str] | None = None,
        box_key: str = "pred_box",
        score_key: str = "pred_score",
        label_key: str = "pred_label",
        image_key: str = "image",
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.class_names = {str(k): str(v) for k, v in (class_names or {}).items()}
        self.box_key = box_key
        self.score_key = score_key
        self.label_key = label_key
        self.image_key = image_key
        self.extra = dict(extra or {})
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        """Write after every iteration."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def record(self, output: Mapping[str, Any], image: Any) -> dict[str, Any]:
        """The JSON content for one image."""
        boxes = torch.as_tensor(output[self.box_key], dtype=torch.float32).reshape(-1, 4)
        scores = torch.as_tensor(output[self.score_key], dtype=torch.float32).reshape(-1)
        labels = torch.as_tensor(output[self.label_key]).reshape(-1).long()
        order = torch.argsort(scores, descending=True)
        boxes, scores, labels = boxes[order], scores[order], labels[order]
        source = source_file(image)
        shape = image.meta.get("spatial_shape") if isinstance(image, MetaTensor) else None
        width, height = (int(v) for v in np.asarray(shape).reshape(-1)[:2]) if shape is not None else (None, None)
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
        record: dict[str, Any] = {
            "image": Path(source).name if source else None,
            "width": width,
            "height": height,
            "box_mode": "xyxy",
            "boxes": [[round(float(v), 2) for v in box] for box in boxes.tolist()],
            "boxes_xywh": [[round(float(v), 2) for v in box] for box in xywh.tolist()],
            "scores": [round(float(v), 5) for v in scores.tolist()],
            "labels": [int(v) for v in labels.tolist()],
        }
        if self.class_names:
            record["label_names"] = [self.class_names.get(str(int(v))) for v in labels.tolist()]
        return {**record, **self.extra}

    def __call__(self, engine: Engine) -> None:
        for item, output in zip(engine.state.batch, engine.state.output, strict=True):
            image = item.get(self.image_key)
            source = source_file(image)
            if source is None:
                raise ValueError(f"the inference batch has no source file name under {self.image_key!r}")
            path = self.output_dir / f"{Path(source).stem}.json"
            atomic_write_bytes(path, (json.dumps(self.record(output, image), indent=2, sort_keys=True) + "\n").encode())
            self.written.append(path)
        engine.logger.debug("wrote %d detection files to %s", len(engine.state.output), self.output_dir)
