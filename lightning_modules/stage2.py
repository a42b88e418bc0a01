"""TUDSR stage 2 (paper section 3.8, Algorithm 2): chunked GAN at N x R resolution, one backward per chunk."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_modules.base import OneStepGANModule
from models.inference.tudsr import TUDSRPipeline
from models.pretrained import require_file
from models.resize import bicubic_upsample


def chunk_grid(x: Tensor, size: int) -> Iterator[tuple[int, int, Tensor]]:
    """Non-overlapping ``size x size`` chunks, left to right, top to bottom (eq. 11). Yields (row, col, chunk)."""
    h, w = x.shape[-2:]
    if h % size or w % size:
        raise ValueError(
            f"stage 2 chunking: image size {h}x{w} is not divisible by the chunk size R={size}; "
            f"set data.crop_size to a multiple of R (N*R for the paper's N^2 chunks)"
        )
    for top in range(0, h, size):
        for left in range(0, w, size):
            yield top // size, left // size, x[..., top : top + size, left : left + size]


class Stage2Module(OneStepGANModule):
    """Algorithm 2. The stage-1 adapter is loaded from its exported file and frozen; a second named adapter in the
    *same* UNet is trained at ``t2``. Per batch: ``m = G1(x_L, t1)`` under no_grad, ``y_L = bilinear_xN(m)``,
    ``y_L`` and ``y_H`` cut into R x R chunks; for each chunk a generator forward, loss, backward and step, then a
    discriminator step on that chunk. Nothing from earlier chunks stays alive, so peak memory is one chunk's.

    Args:
        stage1_adapter: path of the stage-1 adapter exported by stage 1 (diffusers/peft LoRA safetensors).
        stage1_name: adapter name of the stage-1 LoRA inside the UNet.
        t1: stage-1 timestep (200).
        n: upsampling factor N between the two passes (2).
        chunk: chunk size R (512); the GT crop must be a multiple of R.
        per_chunk_step: the paper's per-chunk stepping (default); False accumulates all chunks of a batch (summed
            gradients) and steps once.
        **kwargs: see :class:`OneStepGANModule` (the generator's own timestep is t2 = 50).
    """

    def __init__(
        self,
        *args: Any,
        stage1_adapter: str,
        stage1_name: str = "stage1",
        t1: int = 200,
        n: int = 2,
        chunk: int = 512,
        per_chunk_step: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.stage1_name = stage1_name
        self.t1 = t1
        self.n = n
        self.chunk = chunk
        self.per_chunk_step = per_chunk_step
        # Load the frozen stage-1 adapter now, so trainable state is final before any DDP wrapping.
        self.generator.load_adapter(require_file("TUDSR stage-1 adapter", stage1_adapter), stage1_name, trainable=False)
        self.generator.set_adapter(self.generator.adapter_name)  # the stage-2 adapter is the active, trained one

    @torch.no_grad()
    def stage1_output(self, lq: Tensor, size: tuple[int, int]) -> Tensor:
        """m = G1(x_L, t1): LQ bicubic-upsampled to R-resolution, frozen stage-1 adapter. -> (B, 3, H/N, W/N)"""
        x_l = bicubic_upsample(lq, size)  # (B, 3, H/N, W/N)
        trained = self.generator.adapter_name
        self.generator.set_adapter(self.stage1_name)
        try:
            return self.generator(x_l, lq, timestep=self.t1)
        finally:
            self.generator.set_adapter(trained)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Any]:
        gt = batch["gt"]  # (B, 3, N*R, N*R)
        h, w = gt.shape[-2:]
        if h % self.n or w % self.n:
            raise ValueError(f"stage 2: GT size {h}x{w} is not divisible by N={self.n}")
        m = self.stage1_output(batch["lq"], (h // self.n, w // self.n))  # (B, 3, H/N, W/N)
        y_l = F.interpolate(m, scale_factor=self.n, mode="bilinear", align_corners=False).clamp(0, 1)  # (B, 3, H, W)
        gt_chunks = {(r, c): g for r, c, g in chunk_grid(gt, self.chunk)}
        n_chunks = len(gt_chunks)
        last: dict[str, Any] = {}
        counter = self.batch_counter(batch_idx)
        for i, (r, c, y_l_i) in enumerate(chunk_grid(y_l, self.chunk)):
            if self.per_chunk_step:
                step_now = (counter * n_chunks + i + 1) % self.accumulate == 0
            else:
                step_now = i == n_chunks - 1 and (counter + 1) % self.accumulate == 0
            y_h_i = gt_chunks[(r, c)]
            sr_i = self.generator(y_l_i.contiguous(), None)  # adapter 2 at t2, (B, 3, R, R)
            terms = self.generator_update(sr_i, y_h_i, step_now)
            terms |= self.discriminator_update(sr_i, y_h_i, step_now)
            self.log_terms(terms, batch_size=gt.shape[0])
            last = {"lq": y_l_i.detach(), "sr": sr_i.detach(), "gt": y_h_i}
            del sr_i, terms  # nothing of this chunk's graph outlives the iteration
        return last

    def infer(self, lq: Tensor, scale: int) -> Tensor:
        """Evaluation: the full twice-upsampling pipeline, x(scale) = M x N with M = scale / N."""
        if scale % self.n:
            raise ValueError(f"the batch asks for x{scale}, but stage 2 produces x(M*N) with N = {self.n}: "
                             f"only multiples of {self.n}")
        pipeline = TUDSRPipeline(self.generator, adapter1=self.stage1_name, adapter2=self.generator.adapter_name,
                                 m=scale // self.n, n=self.n, t1=self.t1, t2=self.generator.timestep, color_fix="none")
        return pipeline(lq)
