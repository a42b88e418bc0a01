"""Generator-only inference modules for ``onestep-sr predict`` / ``onestep-sr test``: the steps they share."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from lightning_modules.sr_steps import SRSteps, batch_scale


class GeneratorInference(SRSteps, L.LightningModule):
    """A frozen super-resolver without training parts (no discriminator, no losses, no optimiser).

    Subclasses define :attr:`native_scale` (the factor a batch without ``scale`` gets) and :meth:`restore`
    (``lq`` (B, 3, h, w) [0, 1] -> SR (B, 3, h*s, w*s), with the batch's cached ``cond_features`` when it carries
    them); :meth:`check_scale` may refuse a batch's scale. Test,
    validation and predict batches all go through :meth:`sr_step`: ``{"sr", "gt", "lq", "name"}``, SR float32 in
    [0, 1], computed under ``torch.inference_mode``.
    """

    @property
    def native_scale(self) -> int:
        raise NotImplementedError

    def check_scale(self, scale: int) -> None:
        """Raise a ``ValueError`` naming the supported factors if ``scale`` is not one of them."""

    def restore(self, lq: Tensor, scale: int, cond_features: Tensor | None = None) -> Tensor:
        """``cond_features``: a batch's cached condition features (the data pipeline's feature cache), if any."""
        raise NotImplementedError

    def forward(self, lq: Tensor) -> Tensor:
        return self.restore(lq, self.native_scale)

    def on_predict_start(self) -> None:
        self.eval()

    def on_test_start(self) -> None:
        self.eval()

    def sr_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        scale = batch_scale(batch, self.native_scale)
        self.check_scale(scale)
        with torch.inference_mode():
            sr = self.restore(batch["lq"], scale, batch.get("cond_features")).float().clamp(0, 1)
        return {"sr": sr, "gt": batch.get("gt"), "lq": batch["lq"], "name": batch["name"]}
