"""Export the trained adapter (and any condition MLP) as standalone safetensors files, with a model card."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import lightning as L
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_warn

from callbacks.model_card import render_card
from callbacks.outputs import run_folder
from models.safetensors_io import current_umask, share_mode

__all__ = ["AdapterExport", "current_umask", "share_mode"]


class AdapterExport(L.Callback):
    """At the end of training (and at every checkpoint when ``on_checkpoint``) write
    ``pl_module.generator.export_adapter(<dirpath>/<filename>.safetensors)`` and a model card beside it
    (``README.md``: method, base model, data, steps, validation scores; from ``callbacks/model_card_template.md``).

    The adapter is in the diffusers/peft LoRA format (loadable with ``load_lora_adapter``); a DiT generator also
    writes its condition MLP next to it. Files get the usual umask-respecting mode (0644 under umask 022), so a team
    can share them. Everything written is listed in :attr:`written`.

    Args:
        dirpath: export folder; ``None`` (default): ``<run folder>/export``, i.e. ``<trainer.log_dir>/export``.
        filename: file name without ``.safetensors``; ``None`` (default): the generator's adapter name
            (``stage1``, ``stage2``, ``strsr``), else ``adapter``.
        on_checkpoint: also export whenever a checkpoint is saved (so a crashed run leaves its latest adapter).
        model_card: write ``README.md`` beside the adapter.
    """

    def __init__(self, dirpath: str | None = None, filename: str | None = None, on_checkpoint: bool = True,
                 model_card: bool = True) -> None:
        super().__init__()
        self.dirpath = dirpath
        self.filename = filename
        self.on_checkpoint = on_checkpoint
        self.model_card = model_card
        self.last_path: Path | None = None
        self.written: list[Path] = []

    def path(self, trainer: L.Trainer, pl_module: L.LightningModule | None = None) -> Path:
        """``<dirpath>/<filename>.safetensors`` for this run."""
        run = run_folder(trainer) or Path(trainer.default_root_dir)  # never trainer.log_dir: a collective
        root = Path(self.dirpath) if self.dirpath else run / "export"
        name = self.filename
        if name is None:
            module = pl_module if pl_module is not None else trainer.lightning_module
            name = getattr(getattr(module, "generator", None), "adapter_name", None) or "adapter"
        return root / f"{name}.safetensors"

    def export(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if isinstance(trainer.strategy, FSDPStrategy):
            # Gathering sharded LoRA weights is a collective that a rank-0-only export would hang on; not supported
            # yet: the checkpoints (full state dict, trainable weights only) hold the adapter.
            rank_zero_warn("AdapterExport is skipped under FSDP: take the adapter from the checkpoint")
            return
        if not trainer.is_global_zero:
            return
        path = self.path(trainer, pl_module)
        path.parent.mkdir(parents=True, exist_ok=True)
        result = pl_module.generator.export_adapter(str(path))
        files = [Path(p) for p in (result if isinstance(result, (list, tuple)) else [result or path])]
        for file in files:
            share_mode(file)
        if self.model_card:
            files.append(self._write_card(trainer, pl_module, path.parent / "README.md", files))
        self.last_path = path
        self.written = [p for p in self.written if p not in files] + files

    @staticmethod
    def _write_card(trainer: L.Trainer, pl_module: L.LightningModule, card: Path, files: list[Path]) -> Path:
        text = render_card(trainer, pl_module, files)
        handle, tmp = tempfile.mkstemp(dir=card.parent, prefix=".README.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as out:
                out.write(text)
            share_mode(tmp)
            os.replace(tmp, card)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return card

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self.on_checkpoint:
            self.export(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.export(trainer, pl_module)
