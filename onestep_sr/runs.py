"""Run folders: one folder per run, resumed runs continue theirs, failed starts leave nothing behind.

Every run writes under its logger's folder ``<save_dir>/<name>/<version>/`` (``runs/demo_stage1/version_0/``):
the resolved config, TensorBoard events, ``checkpoints/``, ``export/`` (adapters and model card), ``eval/`` and, for
``predict``, ``predictions/``. The folder of a new run is new:

- ``fit`` takes the next ``version_<N>``; resuming (``--ckpt_path last`` or a checkpoint inside a run folder)
  continues the folder the checkpoint belongs to, so TensorBoard shows one run and checkpoints stay together;
- ``validate``, ``test`` and ``predict`` take the next ``<subcommand>_<N>`` beside the training runs of that name.

``--ckpt_path last`` means the newest ``last.ckpt`` of the run name (``<save_dir>/<name>/*/checkpoints/``).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.cli import SaveConfigCallback

from models.errors import ConfigError

__all__ = ["RunConfigSaver", "RunFolder", "prepare_run_folder"]

_LIGHTNING_NAMES = ("last", "best", "hpc", "registry")  # ckpt_path values Lightning resolves itself
_KEEPABLE = re.compile(r"^(config.*\.yaml|hparams\.yaml|events\.out\.tfevents\..*)$")  # nothing a user would miss


def _logger_root(config: Any) -> Path | None:
    """``<save_dir>/<name>`` of a configured TensorBoard/CSV-style logger (a namespace with both), else None."""
    logger = config.get("trainer", {}).get("logger") if hasattr(config, "get") else None
    init = logger.get("init_args") if hasattr(logger, "get") else None
    if init is None or init.get("save_dir") is None:
        return None
    return Path(os.path.expanduser(str(init.get("save_dir")))) / str(init.get("name") or "lightning_logs")


def _next(root: Path, prefix: str) -> str:
    taken = [int(m.group(1)) for p in (root.iterdir() if root.is_dir() else [])
             if p.is_dir() and (m := re.fullmatch(rf"{prefix}_(\d+)", p.name))]
    return f"{prefix}_{max(taken, default=-1) + 1}"


def prepare_run_folder(config: Any, subcommand: str) -> None:
    """Resolve ``ckpt_path: last`` and choose the run folder (see the module docstring), in ``config`` (the
    subcommand's namespace, before anything is instantiated)."""
    ckpt = config.get("ckpt_path")
    local = ckpt and ckpt not in _LIGHTNING_NAMES and "://" not in str(ckpt)
    if local and not Path(os.path.expanduser(str(ckpt))).is_file():
        raise ConfigError(f"--ckpt_path {ckpt}: no such checkpoint file (give a .ckpt file, or `last` for the newest "
                          "last.ckpt of the run name)")
    root = _logger_root(config)
    if root is None:
        return
    init = config["trainer"]["logger"]["init_args"]
    if ckpt == "last":
        found = sorted(root.glob("*/checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
        if found:
            config["ckpt_path"] = ckpt = str(found[-1])
    if init.get("version") is not None:
        return
    if subcommand == "fit":
        if ckpt and ckpt != "last":
            path = Path(os.path.expanduser(str(ckpt))).resolve()
            if path.parent.name == "checkpoints" and path.parent.parent.parent == root.resolve():
                init["version"] = path.parent.parent.name  # continue the run the checkpoint belongs to
        return
    init["version"] = _next(root, subcommand)


class RunFolder:
    """The run folder a trainer is about to use, so that a run that fails before writing anything of value can
    leave nothing behind (:meth:`clean_failed_start`)."""

    def __init__(self, trainer: L.Trainer) -> None:
        self.created: list[Path] = []
        logger = trainer.logger
        if logger is None or trainer.global_rank != 0 or not getattr(logger, "log_dir", None):
            return
        folder = Path(logger.log_dir)  # the version is chosen here (no folder is created)
        for path in (folder, *folder.parents):
            if path.exists():
                break
            self.created.append(path)

    def clean_failed_start(self) -> None:
        """Remove the folders this run created if they hold nothing but its config and TensorBoard headers."""
        if not self.created:
            return
        folder = self.created[0]
        if folder.is_dir() and any(not p.is_file() or not _KEEPABLE.match(p.name) for p in folder.rglob("*")):
            return  # checkpoints, exports, eval tables or PNGs: keep them
        shutil.rmtree(folder, ignore_errors=True)
        for parent in self.created[1:]:
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()


class RunConfigSaver(SaveConfigCallback):
    """Save the resolved config inside the run folder only, and never over an existing one: ``config.yaml``, or
    ``config_resume_<k>.yaml`` when a resumed run finds its first config there. A run without a logger (hence
    without a run folder) saves none rather than writing into the working directory."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        if trainer.logger is None:
            self.already_saved = True
            return
        log_dir = Path(trainer.log_dir)  # broadcast: every rank calls it
        name = self.config_filename
        if trainer.is_global_zero:
            k = 0
            while (log_dir / name).exists():
                k += 1
                name = f"{Path(self.config_filename).stem}_resume_{k}.yaml"
        self.config_filename = trainer.strategy.broadcast(name)
        self.overwrite = False
        super().setup(trainer, pl_module, stage)
        self.written = [log_dir / self.config_filename]
