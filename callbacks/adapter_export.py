"""Export the trained adapter (and any condition MLP) as standalone safetensors files."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_warn


class AdapterExport(L.Callback):
    """At the end of training (and at every checkpoint when ``on_checkpoint``) call
    ``pl_module.generator.export_adapter(<dir>/<name>.safetensors)``.

    The file is in the diffusers/peft LoRA format (loadable with ``load_lora_adapter``). Default directory:
    ``<trainer.log_dir>/export``.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "adapter", on_checkpoint: bool = True) -> None:
        super().__init__()
        self.dirpath = dirpath
        self.filename = filename
        self.on_checkpoint = on_checkpoint
        self.last_path: Path | None = None

    def path(self, trainer: L.Trainer) -> Path:
        root = Path(self.dirpath) if self.dirpath else Path(trainer.log_dir or ".") / "export"
        return root / f"{self.filename}.safetensors"

    def export(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if isinstance(trainer.strategy, FSDPStrategy):
            # Gathering sharded LoRA weights is a collective that a rank-0-only export would hang on; not supported
            # yet: the checkpoints (full state dict, trainable weights only) hold the adapter.
            rank_zero_warn("AdapterExport is skipped under FSDP: take the adapter from the checkpoint")
            return
        if not trainer.is_global_zero:
            return
        path = self.path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        pl_module.generator.export_adapter(str(path))
        self.last_path = path

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self.on_checkpoint:
            self.export(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.export(trainer, pl_module)
