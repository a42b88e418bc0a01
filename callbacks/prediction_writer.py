"""Write ``predict`` outputs as PNG files, one per input image."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from callbacks.outputs import run_folder
from models.errors import ConfigError


def save_png(image: torch.Tensor, path: Path) -> None:
    """Save a (3, H, W) tensor in [0, 1] as an 8-bit PNG (no metadata, so equal tensors give equal files)."""
    array = (image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG")


class PredictionWriter(BasePredictionWriter):
    """Writes every predicted image to ``output_dir/<stem><suffix>.png``.

    Existing files are kept (a warning names them) unless ``overwrite`` is true. ``predict_step`` must return
    ``{"sr": (B, 3, H, W) in [0, 1], "name": list[str]}``. The files written are listed in :attr:`written`.

    Args:
        output_dir: folder the PNGs go to (created). Default: ``predictions/`` inside the run folder
            (``runs/<run>/predict_<N>/predictions``), printed when predict starts.
        overwrite: replace existing PNGs of the same name instead of keeping them.
        suffix: text appended to each input's file stem, e.g. ``"_x4"`` writes ``photo_x4.png``.
    """

    def __init__(self, output_dir: str | None = None, overwrite: bool = False, suffix: str = "") -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir) if output_dir else None
        self.overwrite = overwrite
        self.suffix = suffix
        self.written: list[Path] = []

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.output_dir is None:
            folder = run_folder(trainer)
            if folder is None:
                raise ConfigError("predict has no folder to write to: give --writer.output_dir OUTPUT_DIR (the "
                                  "default, predictions/ inside the run folder, needs a logger)")
            self.output_dir = folder / "predictions"
        if trainer.is_global_zero:
            print(f"predict writes its PNGs to {self.output_dir}", flush=True)
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def target(self, name: str) -> Path | None:
        if self.output_dir is None:
            return None
        return self.output_dir / f"{name}{self.suffix}.png"

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.output_dir is None or prediction is None:
            return
        for image, name in zip(prediction["sr"], prediction["name"]):
            path = self.target(name)
            assert path is not None
            if path.exists() and not self.overwrite:
                warnings.warn(f"{path} exists; kept (pass --writer.overwrite true to replace it)", stacklevel=1)
                continue
            save_png(image, path)
            self.written.append(path)
