"""Validate once more when training ends between two validation intervals."""

from __future__ import annotations

from typing import Any

import lightning as L

__all__ = ["ValidateAtEnd"]


class ValidateAtEnd(L.Callback):
    """Make the last training step a validation step, so every run is scored (and writes its ``eval/`` tables) on
    the weights it ends with, whatever ``val_check_interval`` is.

    Lightning validates every ``val_check_interval`` training batches; a run whose ``max_steps`` ends between two
    intervals (or before the first one) would end unscored. When a batch brings ``global_step`` (generator updates)
    to ``max_steps``, this callback sets ``trainer.should_stop``, which makes Lightning's epoch loop run its
    validation right after that batch (once: a batch that falls on the interval is validated once). Runs without
    validation data or with ``limit_val_batches: 0`` are left alone.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps and trainer.enable_validation:
            trainer.should_stop = True
