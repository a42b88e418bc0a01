"""TUDSR inference (paper Fig. 2(b)) as a LightningModule for ``main.py test`` and ``main.py predict``."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from models.inference.tudsr import TUDSRPipeline
from models.pretrained import require_file, resolve_dtype


class TUDSRInference(L.LightningModule):
    """x -> up xM -> G(adapter 1, t1) -> bilinear xN -> G(adapter 2, t2); x4 = M2N2, x8 = M4N2.

    Both adapters are loaded into the *one* UNet of ``generator`` and switched with ``set_adapter``. With
    ``adapter2=None`` only stage 1 runs (output xM).

    Args:
        generator: ``OneStepSDGenerator`` built without a trainable adapter (``lora: null``).
        adapter1, adapter2: exported adapter files (stage 1, stage 2).
        m, n, t1, t2: the two upsampling factors and timesteps.
        latent_tile, latent_overlap, vae_tile, vae_overlap, color_fix: tiling and colour fix (see TUDSRPipeline).
        dtype: autocast dtype of the networks (``bf16`` on GPUs; ``null``: the weights' dtype).
        channels_last: store the UNet and VAE convolutions channels-last (faster convolutions on GPUs).
        compile: ``torch.compile`` the UNet in place (adapter switching keeps working; the first image compiles).
    """

    def __init__(
        self,
        generator: nn.Module,
        adapter1: str,
        adapter2: str | None = None,
        m: int = 2,
        n: int = 2,
        t1: int = 200,
        t2: int = 50,
        latent_tile: int | None = 64,
        latent_overlap: int = 32,
        vae_tile: int | None = 512,
        vae_overlap: int = 64,
        color_fix: str = "wavelet",
        dtype: str | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.generator = generator
        self.generator.load_adapter(require_file("TUDSR stage-1 adapter", adapter1), "stage1", trainable=False)
        if adapter2 is not None:
            self.generator.load_adapter(require_file("TUDSR stage-2 adapter", adapter2), "stage2", trainable=False)
        if channels_last:
            self.generator.unet.to(memory_format=torch.channels_last)
            self.generator.vae.to(memory_format=torch.channels_last)
        if compile:
            self.generator.unet.compile()
        self.pipeline = TUDSRPipeline(
            generator, adapter1="stage1", adapter2="stage2" if adapter2 is not None else None, m=m, n=n, t1=t1, t2=t2,
            latent_tile=latent_tile, latent_overlap=latent_overlap, vae_tile=vae_tile, vae_overlap=vae_overlap,
            color_fix=color_fix, dtype=resolve_dtype(dtype) if dtype else None,
        )

    def on_predict_start(self) -> None:
        self.generator.eval()

    def forward(self, lq: Tensor) -> Tensor:
        return self.pipeline(lq)

    def _step(self, batch: dict[str, Any]) -> dict[str, Any]:
        with torch.inference_mode():
            sr = self.pipeline(batch["lq"]).float().clamp(0, 1)
        return {"sr": sr, "gt": batch.get("gt"), "lq": batch["lq"], "name": batch["name"]}

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        return self._step(batch)

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        return self._step(batch)

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        return self._step(batch)
