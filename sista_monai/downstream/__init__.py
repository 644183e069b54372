"""Shared machinery of the downstream bundles (classification, segmentation, detection).

* :mod:`.encoder`: the pretrained encoder through one config key (``pretrained_encoder``), refused with a
  message when it does not fit; label fractions; parameter groups for linear probing or fine-tuning;
* :mod:`.networks`: :class:`ChestXrayClassifier`, an image-only, TorchScript-exportable network;
* :mod:`.transforms`: :class:`EnsureChestXrayd`, MONAI Deploy's ``(W, H, 1)`` array → the network's image;
* :mod:`.metrics`: AUROC, accuracy, F1, sensitivity, specificity, the ROC plot and ``eval/metrics.json``;
* :mod:`.inference`: one JSON per input image;
* :mod:`.segmentation`: U-Net-style segmentation networks on the encoder, Dice/IoU and the segmentation report;
* :mod:`.detection`: RetinaNet on the encoder, its detector and engines, box mapping, one JSON per image;
* :mod:`.detection_metrics`: mAP over IoU 0.40-0.75 (MONAI's COCOMetric) as an Ignite metric, the detection report;
* :mod:`.training`: the final-weights fallback of the best-model saver;
* :mod:`.config`: boolean config values as typed on the command line (``false`` is not truthy);
* :mod:`.compare`: ``python -m sista_monai.downstream.compare`` (pretrained vs random initialisation).
"""

from __future__ import annotations

from .config import as_flag
from .encoder import (
    LABEL_FRACTION_KEYS,
    EncoderMismatchError,
    encoder_differences,
    encoder_parameter_groups,
    encoder_source,
    label_fraction_key,
    load_pretrained_encoder,
    positive_class_weight,
    read_encoder_sidecar,
    sidecar_path,
)
from .inference import ClassificationJSONWriter, inference_datalist, source_file
from .metrics import THRESHOLD_METRICS, ClassificationReport, binary_classification_metrics, plot_roc_curve, roc_curve
from .networks import OUTPUT_KINDS, ChestXrayClassifier, GlobalImageFeatures
from .segmentation import (
    EMPTY_MASK_RULE,
    ResNetSegmentationNet,
    ResNetStages,
    SegmentationReport,
    ViTSegmentationNet,
    dice_iou,
    overlay_image,
    segmentation_datalist,
    segmentation_network,
    segmentation_summary,
)
from .training import FinalModelFallback
from .transforms import EnsureChestXray, EnsureChestXrayD, EnsureChestXrayd, EnsureChestXrayDict

__all__ = [
    "EMPTY_MASK_RULE",
    "ResNetSegmentationNet",
    "ResNetStages",
    "SegmentationReport",
    "ViTSegmentationNet",
    "dice_iou",
    "overlay_image",
    "segmentation_datalist",
    "segmentation_network",
    "segmentation_summary",
    "LABEL_FRACTION_KEYS",
    "OUTPUT_KINDS",
    "THRESHOLD_METRICS",
    "ChestXrayClassifier",
    "ClassificationJSONWriter",
    "ClassificationReport",
    "EncoderMismatchError",
    "EnsureChestXray",
    "EnsureChestXrayd",
    "EnsureChestXrayD",
    "EnsureChestXrayDict",
    "FinalModelFallback",
    "GlobalImageFeatures",
    "as_flag",
    "binary_classification_metrics",
    "encoder_differences",
    "encoder_parameter_groups",
    "encoder_source",
    "inference_datalist",
    "label_fraction_key",
    "load_pretrained_encoder",
    "plot_roc_curve",
    "positive_class_weight",
    "read_encoder_sidecar",
    "roc_curve",
    "sidecar_path",
    "source_file",
]
