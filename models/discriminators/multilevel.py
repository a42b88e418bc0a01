"""Multi-level discriminator: frozen feature backbone + one trainable head per level.

TUDSR paper 3.5 (DINOv3 layers 3/6/9, BlurPool + spectral-norm heads, logits per level averaged by the loss, eq. 6/7)
and StrSR paper 3.3 (CLIP-ConvNeXt stages 0/1/2 + pooled embedding, RaGAN per level).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

from models.discriminators.convnext_clip import CLIPConvNeXtFeatures
from models.discriminators.diffaugment import DiffAugment
from models.discriminators.dinov3 import DINOv3Features
from models.discriminators.heads import build_heads
from models.pretrained import Source

__all__ = ["MultiLevelDiscriminator", "DINOv3Discriminator", "CLIPConvNeXtDiscriminator"]


class MultiLevelDiscriminator(nn.Module):
    """``forward(x (B, 3, H, W) in [0, 1]) -> list`` of logits, one per backbone level: maps (B, 1, h, w) from
    :class:`~models.discriminators.heads.ConvHead`, vectors (B, 1) from ``VectorHead``.

    The backbone (any module with ``out_channels: list[int]``, ``kinds: list["map" | "vector"]`` and
    ``forward(x) -> list[Tensor]``) is frozen and stays in eval mode; gradients flow through it to ``x``. Only
    ``heads`` are trainable: :meth:`trainable_named_parameters` and :meth:`trainable_state_dict` (heads' parameters
    and spectral-norm ``u``/``v`` buffers, keys prefixed ``heads.``) cover exactly them; ``state_dict()`` also holds
    the backbone.

    With ``diffaug`` (a DiffAugment policy such as ``"color,translation,cutout"``), ``forward(x)`` augments ``x``
    with fresh random parameters; to give real and fake the *identical* transform use :meth:`augment` on both, then
    ``forward(..., augment=False)``, or :meth:`forward_pair`.

    Args:
        backbone: frozen feature extractor (e.g. ``DINOv3Features``, ``CLIPConvNeXtFeatures``).
        head_width: hidden width of every head (TUDSR 128, StrSR 512).
        diffaug: DiffAugment policy; empty = off.
    """

    def __init__(self, backbone: nn.Module, head_width: int = 128, diffaug: str = "") -> None:
        super().__init__()
        self.backbone = backbone
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.heads = build_heads(list(backbone.out_channels), list(backbone.kinds), head_width)
        self.diffaug = DiffAugment(diffaug)

    @property
    def num_levels(self) -> int:
        return len(self.heads)

    def train(self, mode: bool = True) -> MultiLevelDiscriminator:
        super().train(mode)
        self.backbone.eval()  # frozen backbone: always eval
        return self

    def augment(self, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Apply the DiffAugment policy with one set of random parameters to all ``images`` (identity when off)."""
        return self.diffaug(*images)

    def forward(self, x: torch.Tensor, augment: bool = True) -> list[torch.Tensor]:
        # x: (B, 3, H, W) in [0, 1] -> [(B, 1, h_l, w_l) or (B, 1)] per level
        if augment and self.diffaug.enabled:
            (x,) = self.diffaug(x)
        feats = self.backbone(x)
        if len(feats) != len(self.heads):
            raise RuntimeError(f"backbone returned {len(feats)} levels, discriminator has {len(self.heads)} heads")
        head_dtype = next(self.heads.parameters()).dtype
        return [head(f.to(head_dtype)) for head, f in zip(self.heads, feats)]

    def forward_pair(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Logits of ``real`` and ``fake`` (same shape) under one identical augmentation, in one batched pass."""
        real, fake = self.augment(real, fake)
        logits = self.forward(torch.cat([real, fake], dim=0), augment=False)
        b = real.shape[0]
        return [lg[:b] for lg in logits], [lg[b:] for lg in logits]

    def trainable_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The heads' parameters, named as in ``self.named_parameters()`` (``heads.<level>.<layer>.<name>``)."""
        yield from self.heads.named_parameters(prefix="heads")

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Heads only (parameters + spectral-norm buffers), keys as in ``state_dict()``."""
        return {f"heads.{k}": v for k, v in self.heads.state_dict().items()}

    def load_trainable_state_dict(self, state: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        """Inverse of :meth:`trainable_state_dict` (keys with the ``heads.`` prefix)."""
        heads_state = {k[len("heads."):]: v for k, v in state.items() if k.startswith("heads.")}
        self.heads.load_state_dict(heads_state, strict=strict)


class DINOv3Discriminator(MultiLevelDiscriminator):
    """TUDSR discriminator (paper 3.5): frozen DINOv3 ViT, one-based ``layers`` (3, 6, 9), :class:`ConvHead` width
    128 per level. YAML: ``class_path: models.discriminators.DINOv3Discriminator`` with
    ``init_args: {backbone: {pretrained: facebook/dinov3-vitb16-pretrain-lvd1689m}}`` or ``{backbone: {config: ...}}``.

    Args:
        backbone: the DINOv3 ViT: a hub id or local folder (``pretrained``), or an architecture ``config``.
        layers: one-based transformer blocks whose features get a head (TUDSR: 3, 6, 9).
        head_width: hidden width of every head (TUDSR 128).
        diffaug: DiffAugment policy applied to D's inputs (e.g. ``"color,translation,cutout"``); empty = off.
        dtype: weight dtype of the frozen backbone (``"fp32"``, ``"bf16"``); ``null``: as loaded.
    """

    def __init__(
        self,
        backbone: Source,
        layers: Sequence[int] = (3, 6, 9),
        head_width: int = 128,
        diffaug: str = "",
        dtype: str | None = None,
    ) -> None:
        super().__init__(DINOv3Features(backbone, layers=tuple(layers), dtype=dtype), head_width, diffaug)


class CLIPConvNeXtDiscriminator(MultiLevelDiscriminator):
    """StrSR discriminator (paper 3.3): frozen CLIP-ConvNeXt-XXLarge, stages (0, 1, 2) + pooled 1024-d embedding,
    heads of width 512 (``VectorHead`` for the embedding). ``backbone`` is a :class:`Source` (local file/dir, hub repo
    id, or a tiny ``config``).

    Args:
        backbone: the CLIP-ConvNeXt: a hub id, local file or folder (``pretrained``), or a timm ``config``.
        stages: zero-based ConvNeXt stages whose feature maps get a head (StrSR: 0, 1, 2).
        pooled: also give the pooled CLIP image embedding a head.
        head_width: hidden width of every head (StrSR 512).
        diffaug: DiffAugment policy applied to D's inputs; empty = off.
        model_name: timm architecture name of the backbone.
        dtype: weight dtype of the frozen backbone (``"fp32"``, ``"bf16"``); ``null``: as loaded.
        grad_checkpointing: recompute the backbone stages in backward (saves activation memory at 1024 px).
    """

    def __init__(
        self,
        backbone: Source,
        stages: Sequence[int] = (0, 1, 2),
        pooled: bool = True,
        head_width: int = 512,
        diffaug: str = "",
        model_name: str = "convnext_xxlarge.clip_laion2b_soup",
        dtype: str | None = None,
        grad_checkpointing: bool = False,
    ) -> None:
        features = CLIPConvNeXtFeatures(
            backbone,
            stages=tuple(stages),
            pooled=pooled,
            model_name=model_name,
            dtype=dtype,
            grad_checkpointing=grad_checkpointing,
        )
        super().__init__(features, head_width, diffaug)
