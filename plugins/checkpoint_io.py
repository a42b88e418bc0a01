"""Crash-safe checkpoint files: write to ``<path>.tmp``, fsync, then rename over the final path."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

__all__ = ["AtomicCheckpointIO", "TMP_SUFFIX"]

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes are atomic: a checkpoint file is either the previous complete one or
    the new complete one, never a half-written file.

    The checkpoint is serialised with ``torch.save`` into ``<path>.tmp`` in the *same* folder (so the rename does
    not cross file systems), flushed and ``fsync``-ed, then moved over ``<path>`` with ``os.replace`` (atomic on
    POSIX and Windows); the folder is fsync-ed so the rename itself survives a power loss. If anything fails
    (exception, ``SIGKILL``), the final path is untouched and at worst a stale ``*.tmp`` is left, which Lightning's
    ``ckpt_path="last"`` ignores (it only matches ``last*.ckpt``) and the next save to that name overwrites.

    Remote paths (``s3://``, ``gs://``...) fall back to Lightning's own transaction-based save. Use from YAML::

        trainer:
          plugins:
            - class_path: plugins.checkpoint_io.AtomicCheckpointIO
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint does not take storage_options")
        if not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path)  # object stores: fsspec transaction in Lightning
            return
        final = Path(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(final.name + TMP_SUFFIX)
        try:
            with open(tmp, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(final.parent)
        log.debug("Saved checkpoint atomically: %s", final)


def _fsync_dir(folder: Path) -> None:
    """Persist a rename (POSIX); silently skipped where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
