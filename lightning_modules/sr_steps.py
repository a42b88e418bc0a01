"""The evaluation steps every module shares: validation, test and predict batches all run ``sr_step``."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["SRSteps", "batch_scale"]


def batch_scale(batch: dict[str, Any], default: int) -> int:
    """The SR factor an evaluation or predict batch asks for: its ``scale`` entry (an int, or the collated (B,)
    tensor or list, all equal), else ``default`` (a batch without one, e.g. ``data.predict_scale: null``)."""
    value = batch.get("scale")
    if value is None:
        return int(default)
    if torch.is_tensor(value):
        values = {int(v) for v in value.flatten().tolist()}
    elif isinstance(value, (list, tuple)):
        values = {int(v) for v in value}
    else:
        values = {int(value)}
    if len(values) != 1:
        raise ValueError(f"one evaluation batch mixes the scales {sorted(values)}")
    return values.pop()


class SRSteps:
    """Mixin for a LightningModule: ``validation_step``, ``test_step`` and ``predict_step`` all return
    :meth:`sr_step` of the batch, ``{"sr", "gt", "lq", "name"}`` (SR float32 in [0, 1]), which the evaluation and
    image-writer callbacks consume."""

    def sr_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        return self.sr_step(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        return self.sr_step(batch)

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        return self.sr_step(batch)
