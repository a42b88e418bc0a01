"""On-disk cache of VLM condition features, so the VLM need not sit in GPU memory during training (issue 5, item 2).

What is cached, honestly: in the paper the VLM sees *each* degraded LR drawn during training (StrSR sec. 3.2); a
degradation draw happens on the fly, so a cache computed beforehand cannot follow it. A cache therefore stores one
fixed LR view per training image and the condition stops varying with the degradation draw. Two views are
supported through ``make_lr``:

- ``bicubic_lr`` (default, needs nothing but the HQ crop): the HQ crop downscaled x4 (bicubic, antialias), i.e. a
  *clean* LR. Cheap and deterministic, but at test time the VLM sees a degraded LR, so the MLP is trained on
  cleaner features than it will meet.
- a fixed-seed degraded LR: pass ``make_lr`` wrapping the Real-ESRGAN degradation seeded per image (e.g. from the
  key). Closer to the test-time input; still one draw per image.

The crop must be the one used in training (StrSR: 1024 center crops); random crops make a per-image cache wrong.
Entries are keyed by ``sha1(image_id | tag)``: ``image_id`` is the training file path as the dataset reports it
(``batch["path"]``), ``tag`` names the LR view, the VLM and the prompt, so changing any of them never reuses stale
features. Each entry is ``<root>/<key[:2]>/<key>.safetensors`` with one tensor ``features`` (L, D) and metadata.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from models.pretrained import resolve_dtype

__all__ = ["FeatureCache", "bicubic_lr"]


def bicubic_lr(hq: Tensor, scale: int = 4) -> Tensor:
    """Clean LR view: (B, 3, H, W) [0, 1] -> (B, 3, H/scale, W/scale) [0, 1], bicubic with antialias."""
    h, w = hq.shape[-2] // scale, hq.shape[-1] // scale
    return F.interpolate(hq.float(), size=(h, w), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


class FeatureCache:
    """Precomputed VLM features per training image, stored as safetensors files under ``root``.

    Args:
        root: cache directory (created on first write).
        tag: names the LR view, VLM and prompt (e.g. ``"bicubic-x4|Qwen3-VL-4B-Instruct|describe"``); part of the key.
        dtype: storage dtype (``"bf16"`` halves the disk use; features are cast back by the consumer).
    """

    def __init__(self, root: str, tag: str = "bicubic-x4", dtype: str = "bf16") -> None:
        self.root = Path(os.path.expanduser(root))
        self.tag = tag
        self.dtype = resolve_dtype(dtype)

    def key(self, image_id: str) -> str:
        return hashlib.sha1(f"{image_id}|{self.tag}".encode()).hexdigest()

    def path(self, image_id: str) -> Path:
        k = self.key(image_id)
        return self.root / k[:2] / f"{k}.safetensors"

    def has(self, image_id: str) -> bool:
        return self.path(image_id).is_file()

    def save(self, image_id: str, features: Tensor) -> Path:
        """Store ``features`` (L, D) for ``image_id``."""
        from safetensors.torch import save_file

        if features.ndim != 2:
            raise ValueError(f"features must be (L, D), got {tuple(features.shape)}")
        p = self.path(image_id)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        save_file({"features": features.detach().to("cpu", self.dtype).contiguous()}, str(tmp),
                  metadata={"image_id": image_id, "tag": self.tag})
        os.replace(tmp, p)  # atomic: a crashed writer never leaves a truncated entry
        return p

    def load(self, image_id: str, device: torch.device | str = "cpu") -> Tensor:
        """Features (L, D) of ``image_id``; ``KeyError`` when missing."""
        from safetensors.torch import load_file

        p = self.path(image_id)
        if not p.is_file():
            raise KeyError(f"no cached VLM features for '{image_id}' (tag '{self.tag}') at {p}; run precompute first")
        return load_file(str(p), device=str(device))["features"]

    def load_batch(self, image_ids: Iterable[str], device: torch.device | str = "cpu") -> Tensor:
        """Stack the features of a batch: (B, L, D). A fixed prompt gives every image the same length L."""
        feats = [self.load(i, device) for i in image_ids]
        lengths = {f.shape[0] for f in feats}
        if len(lengths) != 1:
            raise ValueError(f"cached features of one batch differ in length {sorted(lengths)}; was the prompt or "
                             "the LR size changed between entries?")
        return torch.stack(feats, dim=0)

    @torch.no_grad()
    def precompute(
        self,
        condition: Callable[..., Tensor],
        items: Iterable[tuple[str, Tensor]],
        make_lr: Callable[[Tensor], Tensor] = bicubic_lr,
        overwrite: bool = False,
        device: torch.device | str | None = None,
    ) -> int:
        """Run ``condition`` (a :class:`~models.conditions.vlm.VLMCondition`) on ``make_lr(hq)`` for every
        ``(image_id, hq (3, H, W) [0, 1])`` and store the features; returns the number of entries written.
        ``device``: where the LR is sent (default: the device of the condition's first parameter or buffer)."""
        if device is None and isinstance(condition, torch.nn.Module):
            tensors = [*condition.parameters(), *condition.buffers()]
            device = tensors[0].device if tensors else "cpu"
        written = 0
        for image_id, hq in items:
            if not overwrite and self.has(image_id):
                continue
            lr = make_lr(hq.unsqueeze(0).to(device or "cpu"))  # (1, 3, h, w)
            self.save(image_id, condition(lr, 1)[0])  # (L, D)
            written += 1
        return written
