"""Write safetensors files with the mode any newly created file gets (0666 less the umask).

``safetensors.torch.save_file`` creates its file with mode 0600, so adapters, feature caches and prompt caches
written with it could not be read by the rest of a team sharing a run folder. Every writer in the project goes
through :func:`save_safetensors`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["current_umask", "save_safetensors", "share_mode"]


def current_umask() -> int:
    """The process umask (read from /proc where it exists, so no other thread ever sees a changed umask)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share_mode(path: str | os.PathLike) -> None:
    """Give ``path`` the mode a newly created file gets (0644 under the usual umask 022)."""
    os.chmod(path, 0o666 & ~current_umask())


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                     metadata: dict[str, str] | None = None) -> Path:
    """``safetensors.torch.save_file`` followed by :func:`share_mode`; returns the path."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)
    share_mode(path)
    return Path(path)
