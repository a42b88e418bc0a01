"""TUDSR stage 2 (paper section 3.8, Algorithm 2): chunked GAN at N x R resolution, one backward per chunk."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_modules.base import OneStepGANModule
from models.errors import ConfigError
from models.inference.tudsr import TUDSRPipeline
from models.pretrained import WeightArg, declare_weights, require_file
from models.resize import bicubic_upsample


def chunk_grid(x: Tensor, size: int) -> Iterator[tuple[int, int, Tensor]]:
    """Non-overlapping ``size x size`` chunks, left to right, top to bottom (eq. 11). Yields (row, col, chunk)."""
    h, w = x.shape[-2:]
    if h % size or w % size:
        raise ConfigError(
            f"stage 2 chunking: image size {h}x{w} is not divisible by the chunk size R={size}; "
            f"set data.crop_size to a multiple of R (N*R for the paper's N^2 chunks)"
        )
    for top in range(0, h, size):
        for left in range(0, w, size):
            yield top // size, left // size, x[..., top : top + size, left : left + size]


@declare_weights(stage1_adapter=WeightArg(
    "TUDSR stage-1 adapter", file=True,
    how="train stage 1 first (python main.py fit --config configs/stage1.yaml, or configs/demo/stage1.yaml) and "
        "point this key at its runs/<run>/version_<N>/export/stage1.safetensors"))
class Stage2Module(OneStepGANModule):
    """Algorithm 2. The stage-1 adapter is loaded from its exported file and frozen; a second named adapter in the
    *same* UNet is trained at ``t2``. Per batch: ``m = G1(x_L, t1)`` under no_grad, ``y_L = bilinear_xN(m)``,
    ``y_L`` and ``y_H`` cut into R x R chunks; for each chunk a generator forward, loss, backward and step, then a
    discriminator step on that chunk. Nothing from earlier chunks stays alive, so peak memory is one chunk's.
    ``global_step`` counts generator updates (:class:`OneStepGANModule`): N^2 per batch with per-chunk steps and no
    accumulation.

    The schedule is generic over the generator protocol (named adapters, a noise level per pass): this class runs the
    SD UNet generator of TUDSR; :class:`~lightning_modules.dit_stage2.DiTStage2Module` overrides only the
    generator-specific hooks (:meth:`condition`, :meth:`stage1_output`, :meth:`stage2_output`,
    :meth:`eval_pipeline`) for StrSR's DiT.

    Args:
        stage1_adapter: path of the stage-1 adapter exported by stage 1 (diffusers/peft LoRA safetensors).
        stage1_name: adapter name of the stage-1 LoRA inside the UNet.
        t1: stage-1 timestep (200).
        m: upsampling factor M of the LQ before the stage-1 pass: the batch's LQ must be (H / N) / M per side.
            The paper trains on "the LQ image x_L with the resolution of R^2" and leaves the LQ's own scale open:
            2 with a x4 degradation is M2N2 (256 -> 512 -> 1024, the x4 inference path), 4 with a x8 degradation
            is M4N2 (128 -> 512 -> 1024, the x8 inference path). ``None``: whatever the LQ size gives.
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
        m: int | None = 2,
        n: int = 2,
        chunk: int = 512,
        per_chunk_step: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.stage1_name = stage1_name
        self.t1 = t1
        if m is not None and m < 1:
            raise ValueError(f"stage 2: M must be a positive integer, got {m}")
        self.m = m
        self.n = n
        self.chunk = chunk
        self.per_chunk_step = per_chunk_step
        # Load the frozen stage-1 adapter now, so trainable state is final before any DDP wrapping.
        self.generator.load_adapter(require_file("TUDSR stage-1 adapter", stage1_adapter), stage1_name, trainable=False)
        self.generator.set_adapter(self.generator.adapter_name)  # the stage-2 adapter is the active, trained one

    # ------------------------------------------------ the generator-specific parts (DiTStage2Module overrides them)
    def condition(self, lq: Tensor, cond_features: Tensor | None = None) -> Any:
        """What every pass of one image shares (computed once per batch from the whole LR): nothing for the SD
        generator (the empty-prompt embedding lives in the generator)."""
        return None

    def stage2_output(self, y_l_i: Tensor, cond: Any) -> Tensor:
        """The trained stage-2 adapter on one chunk (B, 3, R, R) at the generator's own t2 -> (B, 3, R, R)."""
        return self.generator(y_l_i, None)

    def eval_pipeline(self, m: int) -> TUDSRPipeline:
        """The twice-upsampling pipeline of evaluation (Fig. 2(b)) around the training generator: MmNn."""
        return TUDSRPipeline(self.generator, adapter1=self.stage1_name, adapter2=self.generator.adapter_name,
                             m=m, n=self.n, t1=self.t1, t2=self.generator.timestep, color_fix="none")

    @torch.no_grad()
    def stage1_output(self, lq: Tensor, size: tuple[int, int], cond: Any = None) -> Tensor:
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
            raise ConfigError(f"stage 2: GT size {h}x{w} (data.crop_size) is not divisible by N={self.n}")
        lq = batch["lq"]  # (B, 3, H/(N*M), W/(N*M))
        if self.m is not None and tuple(lq.shape[-2:]) != (h // self.n // self.m, w // self.n // self.m):
            raise ConfigError(
                f"stage 2 with M={self.m}, N={self.n}: a {h}x{w} GT needs a {h // self.n // self.m}x"
                f"{w // self.n // self.m} LQ (degradation scale M*N={self.m * self.n}), got "
                f"{lq.shape[-2]}x{lq.shape[-1]}; set data.degradation.init_args.scale to {self.m * self.n}"
            )
        cond = self.condition(lq, batch.get("cond_features"))  # once per image, shared by every chunk
        m = self.stage1_output(lq, (h // self.n, w // self.n), cond)  # (B, 3, H/N, W/N)
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
            sr_i = self.stage2_output(y_l_i.contiguous(), cond)  # adapter 2 at t2, (B, 3, R, R)
            terms = self.generator_update(sr_i, y_h_i, step_now)
            terms |= self.discriminator_update(sr_i, y_h_i, step_now)
            self.log_terms(terms, batch_size=gt.shape[0])
            last = {"lq": y_l_i.detach(), "sr": sr_i.detach(), "gt": y_h_i}
            del sr_i, terms  # nothing of this chunk's graph outlives the iteration
        return last

    def infer(self, lq: Tensor, scale: int, cond_features: Tensor | None = None) -> Tensor:
        """Evaluation: the full twice-upsampling pipeline (:meth:`eval_pipeline`), x(scale) = M x N with
        M = scale / N; ``cond_features``: a DiT's cached VLM features of ``lq`` (the SD generator has none)."""
        if scale % self.n:
            raise ValueError(f"the batch asks for x{scale}, but stage 2 produces x(M*N) with N = {self.n}: "
                             f"only multiples of {self.n}")
        return self.eval_pipeline(scale // self.n)(lq, cond_features=cond_features)
