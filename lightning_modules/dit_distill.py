"""StrSR (sections 3.3-3.4, 4.1): one-step DiT adversarial distillation with RaGAN, approximated R1 and FDL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_modules.base import OneStepGANModule
from models.conditions.cache import FeatureCache
from models.conditions.precompute import COMMAND, open_cache


class DiTDistillModule(OneStepGANModule):
    """Generator loss ``L1 + 3 LPIPS + 0.1 RaGAN + w_FDL FDL`` (FDL switched on at its start step, the paper's
    phase 2, by the ``reconstruction`` weights' ``start_steps``); discriminator loss ``RaGAN + R1``.

    Args:
        alternate: True (released code): generator and discriminator update on alternating batches (even batch:
            G, odd batch: D); False: both on every batch.
        feature_cache: directory written by ``python -m models.conditions.precompute`` (issue 5, item 2). When set,
            training reads the condition features of each ``batch["path"]`` from it instead of running the VLM
            (then the condition may be ``VLMCondition(vlm=None, feature_dim=...)``, so the VLM is never loaded;
            validation and prediction still need a VLM). One fixed LR view per image: see
            :mod:`models.conditions.cache`.
        **kwargs: see :class:`OneStepGANModule` (StrSR: lr_G 5e-6, lr_D 1e-6, weight decay 0.01, clip 1.0).
    """

    def __init__(self, *args: Any, alternate: bool = True, tile: int = 1024, tile_overlap: int = 64,
                 feature_cache: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("gan_weight", 0.1)
        kwargs.setdefault("disc_weight", 1.0)
        super().__init__(*args, **kwargs)
        self.alternate = alternate
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.feature_cache = feature_cache
        self._cache: FeatureCache | None = None

    def cached_features(self, image_ids: Sequence[str]) -> Tensor:
        """Cached condition features of ``image_ids`` (``batch["path"]``): (B, L, D) on the module's device."""
        if self._cache is None:
            self._cache, info = open_cache(self.feature_cache)
            want = self.generator.condition.feature_dim
            if int(info["feature_dim"]) != want:
                raise ValueError(f"feature cache '{self.feature_cache}' holds width {info['feature_dim']} but the "
                                 f"generator's condition expects {want}")
        missing = [i for i in image_ids if not self._cache.has(i)]
        if missing:
            raise KeyError(f"no cached VLM features for training image '{missing[0]}' ({len(missing)} of this batch) "
                           f"in '{self.feature_cache}' (tag '{self._cache.tag}'); create them with "
                           + COMMAND.format(root=self.feature_cache))
        return self._cache.load_batch(list(image_ids), self.device)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Any]:
        gt = batch["gt"]  # (B, 3, H, W) in [0, 1] (USM-sharpened GT in StrSR)
        lq_up = self.lq_at_target(batch)
        cond = self.cached_features(batch["path"]) if self.feature_cache else batch.get("cond_features")
        counter = self.batch_counter(batch_idx)
        window = counter // 2 if self.alternate else counter
        step_now = (window + 1) % self.accumulate == 0
        do_g = not self.alternate or counter % 2 == 0
        do_d = not self.alternate or counter % 2 == 1
        terms: dict[str, Tensor] = {}
        if do_g:
            sr = self.generator(lq_up, batch["lq"], cond_features=cond)
            terms |= self.generator_update(sr, gt, step_now)
        else:  # discriminator-only batch: the generator output is not differentiated
            with torch.no_grad():
                sr = self.generator(lq_up, batch["lq"], cond_features=cond)
        if do_d:
            terms |= self.discriminator_update(sr, gt, step_now)
        self.log_terms(terms, batch_size=gt.shape[0])
        fdl_on = float(self.reconstruction.active("fdl", self.global_step)) if "fdl" in self.reconstruction.terms else 0.0
        self.log("train/fdl_active", fdl_on, on_step=True)
        return {"lq": lq_up.detach(), "sr": sr.detach(), "gt": gt.detach()}

    def infer(self, lq: Tensor, scale: int) -> Tensor:
        if getattr(self.generator.condition, "vlm", True) is None:
            raise RuntimeError("the generator's condition is cache-only (VLMCondition(vlm=None)): evaluation needs the "
                               "VLM. Disable validation (trainer.limit_val_batches: 0) or evaluate the exported "
                               "LoRA + MLP with the VLM config")
        up = F.interpolate(lq, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)
        return self.generator.tiled_forward(up, lq, tile=self.tile, overlap=self.tile_overlap)
