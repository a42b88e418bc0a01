"""Frozen DINOv3 ViT feature pyramid for the TUDSR discriminator (paper 3.5).

The backbone is transformers' ``DINOv3ViTModel`` (real weights: ``facebook/dinov3-vitb16-pretrain-lvd1689m``, 12
blocks, dim 768, patch 16, 1 CLS + 4 register tokens, RoPE). Tests and the demo build the same class from a tiny
``DINOv3ViTConfig`` with random weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.pretrained import Source, freeze, from_hf, resolve_dtype

__all__ = ["DINOv3Features", "IMAGENET_MEAN", "IMAGENET_STD", "DINOV3_COMPONENT"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINOV3_COMPONENT = "DINOv3-ViT-B/16 (discriminator backbone)"


class DINOv3Features(nn.Module):
    """Patch-token maps of selected DINOv3 blocks: (B, 3, H, W) in [0, 1] -> list of (B, C, H/p, W/p), p = patch.

    ``layers`` are **one-based** block indices: layer ``l`` is the output of block ``l`` (0-based ``l - 1``), i.e.
    ``output_hidden_states[l]`` of the transformers model, where index 0 is the embedding output. TUDSR's "layers 3,
    6, 9" = blocks [2, 5, 8] 0-based, as in the closest public code. Each selected hidden state goes through the
    model's final LayerNorm, then CLS + register tokens are dropped and the patch tokens are reshaped to a map.
    Only blocks up to ``max(layers)`` are run.

    The input is normalised with ImageNet mean/std and used at its native resolution; H and W must be multiples of
    the patch size (a ``ValueError`` says so otherwise: crop or pad before the discriminator).

    The backbone is frozen (``requires_grad=False``) and always in eval mode, also after ``.train()``: in train mode
    transformers' DINOv3 would jitter/rescale the RoPE coordinates. Gradients flow through it to the input image
    (no ``torch.no_grad`` inside), never into its weights.

    Args:
        source: ``Source(pretrained=<hub id or local dir>)`` or ``Source(config={...DINOv3ViTConfig kwargs})``.
        layers: one-based block indices to tap, each in ``1..num_hidden_layers``.
        dtype: backbone weight dtype (``"fp32"``, ``"bf16"``, ...); features come out in this dtype.
    """

    kinds: list[str]
    out_channels: list[int]

    def __init__(self, source: Source, layers: Sequence[int] = (3, 6, 9), dtype: str | None = None) -> None:
        super().__init__()
        from transformers import DINOv3ViTConfig, DINOv3ViTModel

        model = from_hf(
            DINOV3_COMPONENT,
            DINOv3ViTModel,
            source,
            config_cls=DINOv3ViTConfig,
            dtype=resolve_dtype(dtype),
            yaml_key="<discriminator>.init_args.backbone.pretrained",
        )
        self.model = freeze(model)
        config = model.config
        self.layers = tuple(int(layer) for layer in layers)
        if not self.layers:
            raise ValueError("DINOv3Features needs at least one layer")
        bad = [layer for layer in self.layers if not 1 <= layer <= config.num_hidden_layers]
        if bad:
            raise ValueError(
                f"DINOv3 layers are one-based block indices in 1..{config.num_hidden_layers}; got {bad}"
            )
        patch = config.patch_size
        self.patch_size = int(patch if isinstance(patch, int) else patch[0])
        self.num_prefix_tokens = 1 + int(getattr(config, "num_register_tokens", 0))
        self.out_channels = [int(config.hidden_size)] * len(self.layers)
        self.kinds = ["map"] * len(self.layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> DINOv3Features:
        """Always eval: the frozen backbone must not jitter RoPE coordinates or drop paths."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # x: (B, 3, H, W) in [0, 1] -> [(B, C, H/p, W/p)] * len(layers)
        b, _, h, w = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(
                f"DINOv3 discriminator input must have H and W divisible by the patch size {p}; got {h}x{w}. "
                "Crop or pad the images (e.g. the training crop size) to a multiple of the patch size."
            )
        dtype = self.model.embeddings.patch_embeddings.weight.dtype
        pixels = ((x - self.mean) / self.std).to(dtype)  # (B, 3, H, W)
        tokens = self.model.embeddings(pixels)  # (B, prefix + N, C)
        rope = self.model.rope_embeddings(pixels)  # (cos, sin), each (N, head_dim)
        wanted = set(self.layers)
        taps: dict[int, torch.Tensor] = {}
        for index, block in enumerate(self.model.model.layer[: max(self.layers)], start=1):
            tokens = block(tokens, position_embeddings=rope)
            if index in wanted:
                taps[index] = self.model.norm(tokens)
        maps = []
        for layer in self.layers:
            patches = taps[layer][:, self.num_prefix_tokens :, :]  # (B, N, C)
            maps.append(patches.transpose(1, 2).reshape(b, -1, h // p, w // p))  # (B, C, H/p, W/p)
        return maps
