"""SISTA networks: image encoders (ViT, ResNet), the Hugging Face text encoder, heads and the SISTA model."""

from __future__ import annotations

from .heads import ProjectionHead
from .image_encoders import VIT_PRESETS, ResNetImageEncoder, ViTImageEncoder, build_image_encoder
from .outputs import ImageEncoderOutput, SISTAOutput, TextEncoderOutput
from .sista import SISTAModel
from .text_encoder import HuggingFaceTextEncoder

__all__ = [
    "VIT_PRESETS",
    "ProjectionHead",
    "ViTImageEncoder",
    "ResNetImageEncoder",
    "build_image_encoder",
    "HuggingFaceTextEncoder",
    "SISTAModel",
    "ImageEncoderOutput",
    "TextEncoderOutput",
    "SISTAOutput",
]
