"""The last lines of a run: one line per output it wrote (checkpoints, adapters, model card, eval tables, PNGs).

Convention: a callback that writes files exposes them as ``written: list[Path]`` (kept over the run, newest last);
:class:`RunOutputs` reads that attribute from every callback of the trainer. Lightning's ``ModelCheckpoint`` is
read from its folder (the ``.ckpt`` files written during this run), and evaluation tables under the run's
``eval/`` folder are found by their name (``summary.md``) for callbacks that do not list what they wrote.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

__all__ = ["RunOutputs", "output_lines", "run_folder"]


def run_folder(trainer: L.Trainer) -> Path | None:
    """The run's folder, as ``trainer.log_dir`` gives it, read on this rank alone: ``trainer.log_dir`` is a
    collective (a broadcast from rank 0) and stalls a distributed run when only rank 0 asks. None without a
    logger."""
    if not trainer.loggers:
        return None
    logger = trainer.loggers[0]
    folder = logger.log_dir if isinstance(logger, (TensorBoardLogger, CSVLogger)) else logger.save_dir
    return Path(folder) if folder else None

_ORDER = ("checkpoints", "adapter", "model card", "eval", "images", "config", "file")


def _show(path: Path) -> str:
    """``path`` relative to the working directory when it lies inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
    return str(path) if rel.startswith("..") else rel


def _kind(path: Path) -> tuple[str, Path]:
    """(kind of output, the folder or file that stands for it)."""
    if "eval" in path.parts[:-1]:
        index = len(path.parts) - 1 - path.parts[::-1].index("eval")  # the last "eval" folder
        stage = Path(*path.parts[: index + 2]) if index + 2 < len(path.parts) else path.parent
        return "eval", stage
    if path.suffix == ".ckpt":
        return "checkpoints", path.parent
    if path.suffix == ".png":
        return "images", path.parent
    if path.suffix == ".safetensors":
        return "adapter", path
    if path.name == "README.md" and path.parent.name == "export":
        return "model card", path
    if path.suffix == ".yaml" and path.name.startswith("config"):
        return "config", path
    return "file", path


def output_lines(paths: Iterable[Path]) -> list[str]:
    """One line per output: a file by its path; checkpoints and PNGs as ``<count> in <folder>: first, ..., last``;
    the evaluation files of one stage (``eval/val``, ``eval/test``) by their overview table."""
    groups: dict[tuple[str, Path], list[Path]] = {}
    for path in dict.fromkeys(Path(p) for p in paths):  # unique, in order
        groups.setdefault(_kind(path), []).append(path)
    lines = []
    for (kind, anchor), files in sorted(groups.items(), key=lambda item: _ORDER.index(item[0][0])):
        if kind == "eval":
            table = anchor / "summary.md"
            shown = table if table in files else files[0]
            more = len(files) - 1
            lines.append(f"  {kind:<11} {_show(shown)}" + (f" (+{more} more files in {_show(anchor)})" if more else ""))
        elif kind in ("checkpoints", "images"):
            names = [f.name for f in files]
            listed = ", ".join(names if len(names) <= 4 else [names[0], names[1], "...", names[-1]])
            lines.append(f"  {kind:<11} {len(files)} in {_show(anchor)}{os.sep}: {listed}")
        else:
            lines += [f"  {kind:<11} {_show(f)}" for f in files]
    return lines


class RunOutputs(L.Callback):
    """At the end of ``fit``, ``validate``, ``test`` and ``predict`` print the files the run wrote, one line each
    (see the module docstring), then where its TensorBoard logs are."""

    def __init__(self) -> None:
        super().__init__()
        self._start = time.time()
        self.lines: list[str] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._start = time.time() - 1.0  # file systems with one-second mtimes

    def collect(self, trainer: L.Trainer) -> list[Path]:
        """Every file the callbacks of ``trainer`` wrote during this run, in callback order."""
        paths: list[Path] = []
        for callback in trainer.callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath and os.path.isdir(callback.dirpath):
                ckpts = [p for p in Path(callback.dirpath).glob("*.ckpt") if p.stat().st_mtime >= self._start]
                paths += sorted(ckpts, key=lambda p: (p.name.startswith("last"), p.stat().st_mtime, p.name))
            paths += [Path(p) for p in getattr(callback, "written", None) or [] if Path(p).is_file()]
        run_dir = run_folder(trainer)
        if run_dir is not None and (run_dir / "eval").is_dir():
            tables = [p for p in sorted((run_dir / "eval").glob("*/summary.md")) if p.stat().st_mtime >= self._start]
            paths += [p for p in tables if p not in paths]
        return paths

    def report(self, trainer: L.Trainer) -> None:
        if not trainer.is_global_zero:
            return
        self.lines = output_lines(self.collect(trainer))
        run_dir = run_folder(trainer)
        if run_dir is not None and run_dir.is_dir():
            self.lines.append(f"  {'tensorboard':<11} tensorboard --logdir {_show(run_dir.parent)}")
        header = f"outputs of this run ({_show(run_dir)}):" if run_dir is not None else "outputs of this run:"
        print("\n".join([header, *self.lines]) if self.lines else "this run wrote no files", flush=True)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.report(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self.report(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.report(trainer)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.report(trainer)
