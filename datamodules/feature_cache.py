"""On-disk cache of VLM condition features, read by the data pipeline so the VLM need not sit in GPU memory during
training (StrSR's condition, paper sec. 3.2, eq. 5).

An opt-in memory saver and an approximation. The faithful condition, and the default of every config, is the live
VLM on *each* step's degraded LR, as the released StrSR trainer runs it (jkwang28/StrSR,
``HYPIR/trainer/{flux,zimage}_vlm.py``, ``extract_qwen_feature`` on the batch's ``low_LQ``); a degradation draw
happens on the fly, so a cache computed beforehand cannot follow it. A cache therefore stores one fixed LR view per
training image and the condition stops varying with the degradation draw. Two views are supported through
``make_lr``:

- ``bicubic_lr`` (default, needs nothing but the HQ crop): the HQ crop downscaled x4 (bicubic, antialias), i.e. a
  *clean* LR. Cheap and deterministic, but at test time the VLM sees a degraded LR, so the MLP is trained on
  cleaner features than it will meet.
- a fixed-seed degraded LR: pass ``make_lr`` wrapping the Real-ESRGAN degradation seeded per image (e.g. from the
  key). Closer to the test-time input; still one draw per image.

The crop must be the one used in training: :mod:`datamodules.precompute` takes it from the DataModule's crop mode
(StrSR: ``data.crop: center``, the released resize-then-centre 1024 crop, exactly the training crop); with random
crops it can only describe the centre window.
Entries are keyed by ``sha1(image_id | tag)``: ``image_id`` is the training file path as the dataset reports it
(``batch["path"]``), ``tag`` names the LR view, the VLM and the prompt, so changing any of them never reuses stale
features. Each entry is ``<root>/<key[:2]>/<key>.safetensors`` with one tensor ``features`` (L, D) and metadata; the
manifest ``cache.json`` (written by :mod:`datamodules.precompute`) holds the tag, dtype and feature width.

In training, ``SRDataModule(feature_cache=<root>)`` wraps its training set in :class:`CachedFeatureDataset`: every
item carries ``cond_features`` (L, D), read on the CPU by the loader workers, and a batch carries (B, L, D).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from models.pretrained import resolve_dtype
from models.safetensors_io import save_safetensors

__all__ = ["COMMAND", "MANIFEST", "CachedFeatureDataset", "FeatureCache", "bicubic_lr", "collate_features",
           "open_cache"]

MANIFEST = "cache.json"
COMMAND = "python -m datamodules.precompute --config <your config> --out {root}"


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
        if features.ndim != 2:
            raise ValueError(f"features must be (L, D), got {tuple(features.shape)}")
        p = self.path(image_id)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        save_safetensors({"features": features.detach().to("cpu", self.dtype).contiguous()}, str(tmp),
                         metadata={"image_id": image_id, "tag": self.tag})
        os.replace(tmp, p)  # atomic: a crashed writer never leaves a truncated entry
        return p

    def load(self, image_id: str, device: torch.device | str = "cpu") -> Tensor:
        """Features (L, D) of ``image_id``; ``KeyError`` naming the image and the precompute command when missing."""
        from safetensors.torch import load_file

        p = self.path(image_id)
        if not p.is_file():
            raise KeyError(f"no cached VLM features for training image '{image_id}' in '{self.root}' (tag "
                           f"'{self.tag}', expected at {p}); create them with " + COMMAND.format(root=self.root))
        return load_file(str(p), device=str(device))["features"]

    def load_batch(self, image_ids: Iterable[str], device: torch.device | str = "cpu") -> Tensor:
        """Stack the features of a batch: (B, L, D). A fixed prompt gives every image the same length L."""
        feats = [self.load(i, device) for i in image_ids]
        check_lengths(feats)
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


def open_cache(root: str) -> tuple[FeatureCache, dict[str, Any]]:
    """The cache written by :mod:`datamodules.precompute` (tag and dtype from its manifest) and the manifest
    (``feature_dim``, ``view``, ...); a clear error naming the command when absent."""
    manifest = Path(root).expanduser() / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"no VLM feature cache at '{root}' (missing {MANIFEST}); create it with "
                                + COMMAND.format(root=root))
    info = json.loads(manifest.read_text())
    return FeatureCache(root, tag=info["tag"], dtype=info["dtype"]), info


def check_lengths(features: Sequence[Tensor]) -> None:
    """Entries of one batch must share their length L (a fixed prompt gives every image the same L)."""
    lengths = {f.shape[0] for f in features}
    if len(lengths) != 1:
        raise ValueError(f"cached features of one batch differ in length {sorted(lengths)}; was the prompt or "
                         "the LR size changed between entries?")


class CachedFeatureDataset(Dataset):
    """A training set whose items also carry ``cond_features`` (L, D): the cached VLM features of ``item["path"]``.

    Read in ``__getitem__``, i.e. on the CPU by the DataLoader workers. A missing entry raises ``KeyError`` naming
    the image and the precompute command. Batch the items with :func:`collate_features`.
    """

    def __init__(self, dataset: Dataset, cache: FeatureCache) -> None:
        self.dataset, self.cache = dataset, cache

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> dict[str, Any]:
        item = dict(self.dataset[key])
        item["cond_features"] = self.cache.load(str(item["path"]))  # (L, D)
        return item


def collate_features(items: list[dict[str, Any]]) -> dict[str, Any]:
    """``default_collate`` after checking that the items' ``cond_features`` share their length: (B, L, D)."""
    check_lengths([item["cond_features"] for item in items])
    return default_collate(items)
