"""StrSR (sections 3.3-3.4, 4.1): one-step DiT adversarial distillation with RaGAN, approximated R1 and FDL."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_modules.base import OneStepGANModule


class DiTDistillModule(OneStepGANModule):
    """Generator loss ``L1 + 3 LPIPS + 0.1 RaGAN + w_FDL FDL`` (FDL switched on at its start step, the paper's
    phase 2, by the ``reconstruction`` weights' ``start_steps``); discriminator loss ``RaGAN + R1``.

    Args:
        alternate: True (released code): generator and discriminator update on alternating batches (even batch:
            G, odd batch: D); False: both on every batch.
        **kwargs: see :class:`OneStepGANModule` (StrSR: lr_G 5e-6, lr_D 1e-6, weight decay 0.01, clip 1.0).
    """

    def __init__(self, *args: Any, alternate: bool = True, tile: int = 1024, tile_overlap: int = 64, **kwargs: Any) -> None:
        kwargs.setdefault("gan_weight", 0.1)
        kwargs.setdefault("disc_weight", 1.0)
        super().__init__(*args, **kwargs)
        self.alternate = alternate
        self.tile = tile
        self.tile_overlap = tile_overlap

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Any]:
        gt = batch["gt"]  # (B, 3, H, W) in [0, 1] (USM-sharpened GT in StrSR)
        lq_up = self.lq_at_target(batch)
        window = batch_idx // 2 if self.alternate else batch_idx
        step_now = (window + 1) % self.accumulate == 0
        do_g = not self.alternate or batch_idx % 2 == 0
        do_d = not self.alternate or batch_idx % 2 == 1
        terms: dict[str, Tensor] = {}
        if do_g:
            sr = self.generator(lq_up, batch["lq"], cond_features=batch.get("cond_features"))
            terms |= self.generator_update(sr, gt, step_now)
        else:  # discriminator-only batch: the generator output is not differentiated
            with torch.no_grad():
                sr = self.generator(lq_up, batch["lq"], cond_features=batch.get("cond_features"))
        if do_d:
            terms |= self.discriminator_update(sr, gt, step_now)
        self.log_terms(terms, batch_size=gt.shape[0])
        fdl_on = float(self.reconstruction.active("fdl", self.global_step)) if "fdl" in self.reconstruction.terms else 0.0
        self.log("train/fdl_active", fdl_on, on_step=True)
        return {"lq": lq_up.detach(), "sr": sr.detach(), "gt": gt.detach()}

    def infer(self, lq: Tensor, scale: int) -> Tensor:
        up = F.interpolate(lq, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)
        return self.generator.tiled_forward(up, lq, tile=self.tile, overlap=self.tile_overlap)
