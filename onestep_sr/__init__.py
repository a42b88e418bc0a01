"""onestep-sr: one-step diffusion super-resolution (TUDSR, StrSR) with PyTorch Lightning.

``onestep_sr.cli`` holds the LightningCLI entry point (``python main.py ...`` / the ``onestep-sr`` command).
``onestep_sr.api.Upscaler`` (also ``from onestep_sr import Upscaler``) upscales single images in Python.
"""

from typing import Any

__all__ = ["Upscaler"]


def __getattr__(name: str) -> Any:
    """``Upscaler`` is imported on first use, so ``import onestep_sr`` stays light."""
    if name == "Upscaler":
        from onestep_sr.api import Upscaler

        return Upscaler
    raise AttributeError(f"module 'onestep_sr' has no attribute {name!r}")
