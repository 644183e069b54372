"""Networks: image encoders (ViT, ResNet), the Hugging Face text encoder, heads, the SISTA model, and the downstream
networks on a pretrained encoder (classifier, segmentation decoders, RetinaNet detector)."""

from __future__ import annotations

from .classification import OUTPUT_KINDS, ChestXrayClassifier, GlobalImageFeatures
from .detection import (
    ResNetFPNFeatures,
    SISTARetinaNet,
    ViTSimpleFeaturePyramid,
    build_detector,
    detection_network,
)
from .heads import LearnableTemperature, PositionCentering, ProjectionHead
from .image_encoders import VIT_PRESETS, ResNetImageEncoder, ViTImageEncoder, build_image_encoder
from .outputs import ImageEncoderOutput, SISTAOutput, TextEncoderOutput
from .segmentation import ResNetSegmentationNet, ResNetStages, ViTSegmentationNet, segmentation_network
from .sista import SISTAModel
from .text_encoder import HuggingFaceTextEncoder

__all__ = [
    "VIT_PRESETS",
    "LearnableTemperature",
    "PositionCentering",
    "ProjectionHead",
    "ViTImageEncoder",
    "ResNetImageEncoder",
    "build_image_encoder",
    "HuggingFaceTextEncoder",
    "SISTAModel",
    "ImageEncoderOutput",
    "TextEncoderOutput",
    "SISTAOutput",
    "OUTPUT_KINDS",
    "ChestXrayClassifier",
    "GlobalImageFeatures",
    "ViTSegmentationNet",
    "ResNetStages",
    "ResNetSegmentationNet",
    "segmentation_network",
    "ViTSimpleFeaturePyramid",
    "ResNetFPNFeatures",
    "SISTARetinaNet",
    "detection_network",
    "build_detector",
]
