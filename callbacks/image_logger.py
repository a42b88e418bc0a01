"""Log LQ | SR | GT training grids to TensorBoard at a fixed interval."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchvision.utils import make_grid


def side_by_side(*images: torch.Tensor, max_items: int = 4) -> torch.Tensor:
    """Rows of ``[img_0 | img_1 | ...]`` per sample, all resized (nearest) to the last image's size. -> (3, H', W')"""
    size = images[-1].shape[-2:]
    cols = [F.interpolate(x[:max_items].float(), size=size, mode="nearest") if x.shape[-2:] != size else x[:max_items].float()
            for x in images]
    rows = torch.cat(cols, dim=-1)  # (B, 3, H, W * len(images))
    return make_grid(rows.clamp(0, 1).cpu(), nrow=1, padding=2)


class ImageLogger(L.Callback):
    """Every ``every_n_steps`` generator updates (``trainer.global_step``, the project's step axis), log
    ``train/images_lq_sr_gt`` (LQ | SR | GT) from the training step's output, at that step, once per step.

    ``training_step`` returns ``{"lq": ..., "sr": ..., "gt": ...}`` (detached, [0, 1]).
    """

    def __init__(self, every_n_steps: int = 500, max_items: int = 2) -> None:
        super().__init__()
        self.every_n_steps = every_n_steps
        self.max_items = max_items
        self._last_logged = -1

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if not isinstance(outputs, dict) or "sr" not in outputs or trainer.logger is None:
            return
        if step == self._last_logged or (step % self.every_n_steps != 0 and batch_idx != 0):
            return
        experiment = getattr(trainer.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_image") or not trainer.is_global_zero:
            return
        grid = side_by_side(outputs["lq"], outputs["sr"], outputs["gt"], max_items=self.max_items)
        experiment.add_image("train/images_lq_sr_gt", grid, global_step=step)
        self._last_logged = step
