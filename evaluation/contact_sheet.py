"""Contact sheet of an evaluation set: one row per image, LQ | ours | GT, each panel at the SR size reduced to a
longest side of ``max_side`` (LQ enlarged with nearest neighbours so its pixels stay visible; a grey panel where a
set has no GT). Rows of different sizes are centred on a white sheet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

__all__ = ["GAP", "contact_row", "contact_sheet", "save_png"]

GAP = 4  # white pixels between panels and rows


def _panel_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    factor = min(1.0, max_side / max(height, width))
    return max(1, round(height * factor)), max(1, round(width * factor))


def _resize(x: Tensor, size: tuple[int, int], nearest: bool) -> Tensor:  # (3, h, w) -> (3, H, W) float in [0, 1]
    x = x.detach().float().cpu()[None]
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="nearest") if nearest else \
            F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x[0].clamp(0, 1)


def contact_row(lq: Tensor | None, sr: Tensor, gt: Tensor | None, max_side: int = 384) -> Tensor:
    """One row ``[LQ | ours | GT]`` as uint8 (3, H, 3W + 2 GAP); inputs (3, h, w) in [0, 1]."""
    size = _panel_size(sr.shape[-2], sr.shape[-1], max_side)
    grey = torch.full((3, *size), 0.5)
    panels = [grey if lq is None else _resize(lq, size, nearest=True), _resize(sr, size, nearest=False),
              grey if gt is None else _resize(gt, size, nearest=False)]
    gap = torch.ones(3, size[0], GAP)
    row = torch.cat([panels[0], gap, panels[1], gap, panels[2]], dim=-1)
    return (row * 255).round().to(torch.uint8)


def contact_sheet(rows: list[Tensor]) -> Tensor:
    """Stack rows (uint8 (3, h_i, w_i)) top to bottom, centred, white background. -> uint8 (3, H, W)."""
    if not rows:
        raise ValueError("a contact sheet needs at least one row")
    width = max(r.shape[-1] for r in rows)
    height = sum(r.shape[-2] for r in rows) + GAP * (len(rows) - 1)
    sheet = torch.full((3, height, width), 255, dtype=torch.uint8)
    top = 0
    for row in rows:
        left = (width - row.shape[-1]) // 2
        sheet[:, top : top + row.shape[-2], left : left + row.shape[-1]] = row
        top += row.shape[-2] + GAP
    return sheet


def save_png(sheet: Tensor, path: str | Path) -> Path:
    """Write a uint8 (3, H, W) image as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(sheet.permute(1, 2, 0).numpy())).save(path)
    return path
