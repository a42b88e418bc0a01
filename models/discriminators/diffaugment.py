"""Differentiable augmentation shared by real and fake discriminator inputs.

Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training" (NeurIPS 2020), policy
``color,translation,cutout`` as used by the vision-aided-GAN discriminators that TUDSR builds on (optional). Here
one call draws **one** set of random parameters (per sample of the batch) and applies it to every image passed, so
real and fake see the identical transform.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DiffAugment", "POLICIES"]

POLICIES = ("color", "translation", "cutout")


class DiffAugment(nn.Module):
    """``forward(*images) -> tuple`` of augmented images, all with the same random parameters.

    Images are (B, C, H, W) in [0, 1]; the original operations are defined on [-1, 1] images, so each image is
    mapped to [-1, 1], augmented, and mapped back (exactly equivalent: brightness offsets U(-0.5, 0.5) on [-1, 1] are
    U(-0.25, 0.25) on [0, 1]; translation and cutout fill with 0 on [-1, 1], i.e. mid-grey 0.5 on [0, 1]).

    - color: brightness ``x + U(-0.5, 0.5)``, saturation ``(x - mean_c) * U(0, 2) + mean_c``, contrast
      ``(x - mean_chw) * U(0.5, 1.5) + mean_chw`` (means per image, as in the original);
    - translation: integer shift in ``[-round(H/8), round(H/8)]`` per axis, zero fill;
    - cutout: one zeroed square of half the side per image, centre uniform over the image.

    An empty policy switches it off (inputs are returned unchanged). Results are differentiable w.r.t. the images.
    """

    def __init__(self, policy: str = "color,translation,cutout") -> None:
        super().__init__()
        self.policy = [p.strip() for p in policy.split(",") if p.strip()]
        unknown = [p for p in self.policy if p not in POLICIES]
        if unknown:
            raise ValueError(f"unknown DiffAugment policy {unknown}; expected a comma list of {POLICIES}")

    @property
    def enabled(self) -> bool:
        return bool(self.policy)

    def forward(self, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not images:
            raise ValueError("DiffAugment needs at least one image batch")
        if not self.enabled:
            return tuple(images)
        shape = images[0].shape
        if any(img.shape != shape for img in images):
            shapes = [tuple(img.shape) for img in images]
            raise ValueError(f"all images of one DiffAugment call need the same shape, got {shapes}")
        b, _, h, w = shape
        device, dtype = images[0].device, images[0].dtype
        out = [img * 2.0 - 1.0 for img in images]  # [0, 1] -> [-1, 1]
        for name in self.policy:
            if name == "color":
                brightness = torch.rand(b, 1, 1, 1, device=device, dtype=dtype) - 0.5
                saturation = torch.rand(b, 1, 1, 1, device=device, dtype=dtype) * 2.0
                contrast = torch.rand(b, 1, 1, 1, device=device, dtype=dtype) + 0.5
                out = [_color(x, brightness, saturation, contrast) for x in out]
            elif name == "translation":
                sx, sy = int(h * 0.125 + 0.5), int(w * 0.125 + 0.5)
                tx = torch.randint(-sx, sx + 1, (b,), device=device)
                ty = torch.randint(-sy, sy + 1, (b,), device=device)
                out = [_translate(x, tx, ty) for x in out]
            elif name == "cutout":
                mask = _cutout_mask(b, h, w, device, dtype)  # (B, 1, H, W)
                out = [x * mask for x in out]
        return tuple((x + 1.0) * 0.5 for x in out)  # back to [0, 1]

    def extra_repr(self) -> str:
        return f"policy={','.join(self.policy) or 'off'}"


def _color(x: torch.Tensor, brightness: torch.Tensor, saturation: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    x = x + brightness
    mean_c = x.mean(dim=1, keepdim=True)  # (B, 1, H, W)
    x = (x - mean_c) * saturation + mean_c
    mean_all = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return (x - mean_all) * contrast + mean_all


def _translate(x: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """out[b, :, i, j] = x[b, :, i + tx[b], j + ty[b]] where inside the image, else 0 (the original's indexing)."""
    b, _, h, w = x.shape
    rows = (torch.arange(h, device=x.device)[None, :] + tx[:, None] + 1).clamp(0, h + 1)  # (B, H) in padded coords
    cols = (torch.arange(w, device=x.device)[None, :] + ty[:, None] + 1).clamp(0, w + 1)  # (B, W)
    padded = F.pad(x, [1, 1, 1, 1])  # (B, C, H + 2, W + 2), zero border
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _cutout_mask(b: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
    ox = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=device)
    oy = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=device)
    rows = torch.arange(h, device=device)[None, :, None]  # (1, H, 1)
    cols = torch.arange(w, device=device)[None, None, :]  # (1, 1, W)
    inside = (rows >= ox - ch // 2) & (rows < ox - ch // 2 + ch) & (cols >= oy - cw // 2) & (cols < oy - cw // 2 + cw)
    return (~inside).to(dtype)[:, None]  # (B, 1, H, W), 0 inside the cut square
