"""StrSR (sections 3.3-3.4, 4.1): one-step DiT adversarial distillation with RaGAN, approximated R1 and FDL."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_modules.base import OneStepGANModule
from models.resize import bicubic_upsample


class DiTDistillModule(OneStepGANModule):
    """Generator loss ``L1 + 3 LPIPS + 0.1 RaGAN + w_FDL FDL`` (FDL switched on at its start step, the paper's
    phase 2, by the ``reconstruction`` weights' ``start_steps``); discriminator loss ``RaGAN + R1``.

    The generator is a :class:`~models.generators.dit_onestep.OneStepDiTGenerator`. When a training batch carries
    ``cond_features`` (B, L, D) (``SRDataModule(feature_cache=...)`` reads them from the cache written by
    ``python -m datamodules.precompute``), they replace running the VLM: the condition may then be
    ``VLMCondition(vlm=None, feature_dim=...)``, so the VLM is never loaded (validation and prediction still need a
    VLM). One fixed LR view per image: see :mod:`datamodules.feature_cache`. The module never opens files.

    Step axis (see :class:`OneStepGANModule`): ``global_step`` counts generator updates. With ``alternate``, each
    pair of batches is one discriminator update (even batch) then one generator update (odd batch), so every
    completed pair ends on its generator update: ``max_steps: 60000`` makes 60,000 G and 60,000 D updates and
    FDL's ``start_steps: 40000`` applies from generator update 40,001 on (after 40,000 updates), the released
    schedule (its counter advances once per G/D pair; stage 2 resumes from ``checkpoint-40000`` with FDL on). The
    released loop runs G first; with G first the run would end on a generator update and miss its last D update.
    A pair's loss terms (D and G) are logged together on its generator batch, at ``step`` = generator updates.

    Args:
        alternate: True (released code): generator and discriminator update on alternating batches (even batch:
            D, odd batch: G); False: both on every batch (G, then D on the same output).
        tile: pixel tile size of the evaluation forward (StrSR inference: 1024).
        tile_overlap: overlap of neighbouring evaluation tiles in pixels (StrSR inference: 64).
        **kwargs: see :class:`OneStepGANModule` (StrSR: lr_G 5e-6, lr_D 1e-6, weight decay 0.01, clip 1.0).
    """

    def __init__(self, *args: Any, alternate: bool = True, tile: int = 1024, tile_overlap: int = 64,
                 **kwargs: Any) -> None:
        kwargs.setdefault("gan_weight", 0.1)
        kwargs.setdefault("disc_weight", 1.0)
        super().__init__(*args, **kwargs)
        self.alternate = alternate
        self.tile = tile
        self.tile_overlap = tile_overlap
        self._pair_terms: dict[str, Tensor] = {}  # D terms of the running pair, logged with its G terms

    def cond_features(self, batch: dict[str, Tensor]) -> Tensor | None:
        """The batch's cached condition features (B, L, D), checked against the condition's width; ``None``: the
        generator runs its condition encoder on ``batch["lq"]``."""
        cond = batch.get("cond_features")
        if cond is None:
            return None
        want = self.generator.condition.feature_dim
        if cond.shape[-1] != want:
            raise ValueError(f"the batch's cached VLM features have width {cond.shape[-1]} but the generator's "
                             f"condition expects {want}: data.feature_cache was computed with another VLM")
        return cond

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Any]:
        gt = batch["gt"]  # (B, 3, H, W) in [0, 1] (USM-sharpened GT in StrSR)
        lq_up = self.lq_at_target(batch)
        cond = self.cond_features(batch)  # (B, L, D) or None
        counter = self.batch_counter(batch_idx)
        window = counter // 2 if self.alternate else counter
        step_now = (window + 1) % self.accumulate == 0
        do_g = not self.alternate or counter % 2 == 1
        if do_g:
            fdl_on = "fdl" in self.reconstruction.terms and self.reconstruction.active("fdl", self.global_step)
            sr = self.generator(lq_up, batch["lq"], cond_features=cond)
            terms = {**self.generator_update(sr, gt, step_now), "fdl_active": gt.new_tensor(float(fdl_on))}
            if self.alternate:
                terms = {**self._pair_terms, **terms}
                self._pair_terms = {}
            else:
                terms |= self.discriminator_update(sr, gt, step_now)
            self.log_terms(terms, batch_size=gt.shape[0])
        else:  # discriminator-only batch: the generator output is not differentiated
            with torch.no_grad():
                sr = self.generator(lq_up, batch["lq"], cond_features=cond)
            self._pair_terms = self.discriminator_update(sr, gt, step_now)
        return {"lq": lq_up.detach(), "sr": sr.detach(), "gt": gt.detach()}

    def infer(self, lq: Tensor, scale: int) -> Tensor:
        if getattr(self.generator.condition, "vlm", True) is None:
            raise RuntimeError("the generator's condition is cache-only (VLMCondition(vlm=None)): evaluation needs the "
                               "VLM. Disable validation (trainer.limit_val_batches: 0) or evaluate the exported "
                               "LoRA + MLP with the VLM config")
        return self.generator.tiled_forward(bicubic_upsample(lq, scale), lq, tile=self.tile, overlap=self.tile_overlap)
