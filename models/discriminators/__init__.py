"""Discriminators: frozen feature backbones + trainable multi-level BlurPool / spectral-norm heads."""

from models.discriminators.blurpool import BlurPool, binomial_filter
from models.discriminators.convnext_clip import CLIPConvNeXtFeatures
from models.discriminators.diffaugment import DiffAugment
from models.discriminators.dinov3 import DINOv3Features
from models.discriminators.heads import ConvHead, VectorHead, build_heads, conv_head_output_size
from models.discriminators.multilevel import (
    CLIPConvNeXtDiscriminator,
    DINOv3Discriminator,
    MultiLevelDiscriminator,
)

__all__ = [
    "BlurPool",
    "binomial_filter",
    "ConvHead",
    "VectorHead",
    "build_heads",
    "conv_head_output_size",
    "DiffAugment",
    "DINOv3Features",
    "CLIPConvNeXtFeatures",
    "MultiLevelDiscriminator",
    "DINOv3Discriminator",
    "CLIPConvNeXtDiscriminator",
]
