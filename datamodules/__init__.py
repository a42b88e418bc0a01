"""Data: image folders, the Real-ESRGAN degradation (``datamodules.degradation``), the LightningDataModule.

``SRDataModule`` and ``EvalSet`` are imported on first access (PEP 562), so ``import datamodules.images`` or
``datamodules.degradation`` (plain torch) does not import Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .datamodule import EvalSet, SRDataModule

__all__ = ["EvalSet", "SRDataModule"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import datamodule

        return getattr(datamodule, name)
    raise AttributeError(f"module 'datamodules' has no attribute {name!r}")
