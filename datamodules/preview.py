"""Look at the training pairs: ``python -m datamodules.preview --out DIR [--preset light] [--n 8] [--seed 0]
[--input FOLDER] [--scale 4] [--crop 256]``.

Writes ``pair_000_lq.png`` / ``pair_000_hq.png`` ... and ``grid.png`` (each LQ bicubic-upsampled to the HQ size,
beside its HQ crop). Crops, kernels and degradation are the training ones (:class:`HQImageDataset` +
:class:`RealESRGANDegradation`), seeded by ``--seed``: the same arguments give byte-identical files (PNG written by
Pillow with fixed settings and no metadata). Without ``--input`` the photos bundled in scikit-image are used.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.resize import bicubic_upsample

from .datasets import HQImageDataset
from .degradation import KernelSampler, RealESRGANDegradation
from .images import DataError, tensor_to_uint8

_GAP = 8  # pixels between tiles in the grid
_PAIRS_PER_ROW = 2


def make_pairs(
    n: int = 8, preset: str = "light", seed: int = 0, input_dir: str | None = None, scale: int = 4, crop: int = 256
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Degrade ``n`` training crops; returns (lq (n, 3, crop/scale, crop/scale), hq (n, 3, crop, crop), paths)."""
    if n < 1:
        raise DataError(f"--n must be at least 1, got {n}")
    if crop % scale:
        raise DataError(f"--crop {crop} must be divisible by --scale {scale}")
    degradation = RealESRGANDegradation(preset=preset, scale=scale, seed=seed)
    degradation.set_seed(seed)
    dataset = HQImageDataset([input_dir] if input_dir else None, crop_size=crop, flip=True,
                             kernel_sampler=KernelSampler(degradation.config), seed=seed)
    items = [dataset[(i % len(dataset), 0, i)] for i in range(n)]
    batch = {key: torch.stack([item[key] for item in items]) for key in items[0] if key != "path"}
    with torch.no_grad():
        out = degradation(batch)
    return out["lq"], out["gt"], [str(item["path"]) for item in items]


def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, format="PNG", compress_level=6, optimize=False)


def make_grid(lq: torch.Tensor, hq: torch.Tensor) -> np.ndarray:
    """(N, 3, h, w) LQ + (N, 3, H, W) HQ -> (rows, cols, 3) uint8: [bicubic LQ | HQ] tiles on white, 2 pairs per row."""
    n, _, height, width = hq.shape
    up = bicubic_upsample(lq.float(), (height, width))
    cols = min(n, _PAIRS_PER_ROW)
    rows = math.ceil(n / cols)
    pair_w = 2 * width + _GAP
    grid = np.full((rows * height + (rows - 1) * _GAP, cols * pair_w + (cols - 1) * _GAP, 3), 255, np.uint8)
    for i in range(n):
        top, left = (i // cols) * (height + _GAP), (i % cols) * (pair_w + _GAP)
        grid[top:top + height, left:left + width] = tensor_to_uint8(up[i])
        grid[top:top + height, left + width + _GAP:left + pair_w] = tensor_to_uint8(hq[i])
    return grid


def write_preview(
    out_dir: str | Path, n: int = 8, preset: str = "light", seed: int = 0, input_dir: str | None = None,
    scale: int = 4, crop: int = 256,
) -> list[Path]:
    """Write the pairs and the grid into ``out_dir`` (created if needed); returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lq, hq, _ = make_pairs(n, preset, seed, input_dir, scale, crop)
    written: list[Path] = []
    for i in range(n):
        for tag, image in (("lq", lq[i]), ("hq", hq[i])):
            path = out / f"pair_{i:03d}_{tag}.png"
            _save_png(tensor_to_uint8(image), path)
            written.append(path)
    grid_path = out / "grid.png"
    _save_png(make_grid(lq, hq), grid_path)
    written.append(grid_path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datamodules.preview", description=__doc__.split("\n\n")[1])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--preset", default="light", help="degradation preset: light or realesrgan")
    parser.add_argument("--n", type=int, default=8, help="number of pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--input", default=None, help="folder of HQ images (default: bundled scikit-image photos)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--crop", type=int, default=256, help="HQ crop size")
    args = parser.parse_args(argv)
    try:
        written = write_preview(args.out, args.n, args.preset, args.seed, args.input, args.scale, args.crop)
    except DataError as err:
        parser.exit(2, f"error: {err}\n")
    for path in written:
        print(f"wrote {path}")
    print(f"{args.n} LQ/HQ pairs (preset={args.preset}, scale={args.scale}, crop={args.crop}, seed={args.seed}) "
          f"and grid.png in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
