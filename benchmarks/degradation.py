"""Throughput of the Real-ESRGAN degradation: training pairs per second per preset, batch size and device.

    python -m benchmarks.degradation [--iters 3] [--crop 512] [--batch-sizes 4 16] [--devices cpu cuda] [--quick]

Kernels are drawn per sample by ``KernelSampler`` as the dataset does (numpy, CPU); their cost is reported in its
own column and folded into ``pairs_per_s_with_kernels`` (serial: kernels then degradation).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from skimage import data

from benchmarks.common import peak_memory_mb, print_table, reset_peak_memory, time_it, write_json
from datamodules.degradation import DegradationConfig, KernelSampler, RealESRGANDegradation

PHOTOS = ("astronaut", "immunohistochemistry", "hubble_deep_field", "retina", "coffee", "rocket")


def photo_batch(batch_size: int, crop: int, seed: int = 0) -> torch.Tensor:
    """(B, 3, crop, crop) random crops of the photos bundled with scikit-image (reflect-padded when too small)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(batch_size):
        img = getattr(data, PHOTOS[i % len(PHOTOS)])()[..., :3]
        ph, pw = max(0, crop - img.shape[0]), max(0, crop - img.shape[1])
        if ph or pw:
            img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect")
        top = int(rng.integers(0, img.shape[0] - crop + 1))
        left = int(rng.integers(0, img.shape[1] - crop + 1))
        out.append(torch.from_numpy(np.ascontiguousarray(img[top : top + crop, left : left + crop])).permute(2, 0, 1))
    return torch.stack(out).float() / 255


def sample_kernels(sampler: KernelSampler, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
    items = [sampler(rng) for _ in range(batch_size)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def run(
    devices: list[str] | None = None,
    crop: int = 512,
    batch_sizes: tuple[int, ...] = (4, 16),
    presets: tuple[str, ...] = ("realesrgan", "light"),
    iters: int = 3,
    warmup: int = 1,
    scale: int = 4,
) -> list[dict]:
    """Time ``RealESRGANDegradation`` (and the kernel draws) on each device; one row per (device, preset, batch)."""
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for preset in presets:
            sampler = KernelSampler(DegradationConfig.preset(preset))
            for b in batch_sizes:
                rng = np.random.default_rng(0)
                gt = photo_batch(b, crop).to(device)
                deg = RealESRGANDegradation(preset=preset, scale=scale, seed=0)
                kernel_s = time_it(lambda: sample_kernels(sampler, rng, b), warmup, iters, "cpu")
                batch = {"gt": gt, **{k: v.to(device) for k, v in sample_kernels(sampler, rng, b).items()}}
                reset_peak_memory(device)
                # each call draws new per-batch choices (resize, noise type, order): the mean covers several
                degrade_s = time_it(lambda: deg(batch), warmup, iters, device)
                rows.append(
                    {
                        "device": device,
                        "preset": preset,
                        "crop": crop,
                        "batch": b,
                        "iters": iters,
                        "degrade_s_per_batch": degrade_s,
                        "pairs_per_s": b / degrade_s,
                        "kernel_ms_per_pair": 1000 * kernel_s / b,
                        "pairs_per_s_with_kernels": b / (degrade_s + kernel_s),
                        "peak_mem_mb": peak_memory_mb(device),
                    }
                )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--presets", nargs="+", default=["realesrgan", "light"])
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--quick", action="store_true", help="one timed iteration, no warm-up")
    args = parser.parse_args(argv)
    if args.quick:
        args.iters, args.warmup = 1, 0
    rows = run(args.devices, args.crop, tuple(args.batch_sizes), tuple(args.presets), args.iters, args.warmup)
    print_table(rows, f"Real-ESRGAN degradation throughput (crop {args.crop}, x4)")
    print(f"\nwrote {write_json(rows, 'degradation')}")


if __name__ == "__main__":
    main()
