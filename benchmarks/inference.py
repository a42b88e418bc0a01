"""Inference latency: TUDSR twice-upsampling pipeline (Table 3 settings) and StrSR tiled DiT inference.

    python -m benchmarks.inference [--quick] [--no-compile] [--latent-tile 64 | 0] [--vae-tile 512 | 0]

GPU (CUDA present): the real-size SD2.1-base architecture (random weights) with two random rank-32 adapters, bf16,
at the paper's sizes; variants: adapters switched with ``set_adapter`` (default), ``+channels_last``,
``+compile`` (``unet.compile()`` in place, so adapter switching still works) and ``fused copies``.
CPU: the tiny demo architecture at scaled-down sizes (32->128, 32->256, 64->256, 64->512).

Fused LoRA: peft merges one adapter into the base weights; merging stage 1 and then switching to stage 2 would
need an unmerge in between (two full weight rewrites per image and bf16 round-off that accumulates in the base
weights), so a single fused UNet is *not* correct with adapter switching. The ``fused copies`` variant keeps
one UNet copy per adapter, each with its adapter merged once (one extra UNet in memory: about 1.7 GB in bf16),
and swaps the copy per stage; its output is checked against the unfused pipeline (``max_abs_diff``).
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.arch import SD21_UNET, SD21_VAE, load_demo
from benchmarks.common import peak_memory_mb, print_table, reset_peak_memory, time_it, write_json
from models.inference.tudsr import TUDSRPipeline
from models.resize import bicubic_upsample

# (scale, m, n, input size, paper latency on an H800 in seconds: TUDSR Table 3)
TABLE3 = [(4, 2, 2, 128, 0.0596), (8, 4, 2, 128, 0.4201), (4, 2, 2, 256, 0.4296), (8, 4, 2, 256, 2.2848)]
DEMO_INPUTS = {128: 32, 256: 64}  # CPU: input sizes scaled down by 4
SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "prediction_type": "epsilon", "clip_sample": False}


def build_generator(size: str, device: str, dtype: torch.dtype, rank: int = 32) -> torch.nn.Module:
    """``OneStepSDGenerator`` (real-size SD2.1-base or the demo architecture) with two random adapters."""
    from models.generators.sd_onestep import OneStepSDGenerator
    from models.lora import LoraConfig
    from models.pretrained import Source

    if size == "real":
        vae, unet = SD21_VAE, SD21_UNET
    else:
        g = load_demo("stage1")["model"]["init_args"]["generator"]["init_args"]
        vae, unet = g["vae"]["config"], g["unet"]["config"]
        rank = min(rank, 8)
    gen = OneStepSDGenerator(vae=Source(config=vae), unet=Source(config=unet), scheduler=Source(config=SCHEDULER),
                             lora=None, dtype="bf16" if dtype == torch.bfloat16 else "fp32")
    for name in ("stage1", "stage2"):
        gen.add_adapter(name, LoraConfig(rank=rank, alpha=rank, init="gaussian"), trainable=False)
        with torch.no_grad():  # B = 0 at init would make the adapters no-ops: give them random B as trained ones have
            for pname, p in gen.unet.named_parameters():
                if f"lora_B.{name}." in pname:
                    p.normal_(0, 0.01)
    return gen.to(device).eval()


class FusedCopies:
    """Stage-wise UNet copies with one adapter each merged into the base weights; ``__call__`` runs the same
    computation as :class:`TUDSRPipeline` (resize, stage 1, resize, stage 2) swapping copies instead of adapters."""

    def __init__(self, pipe: TUDSRPipeline) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        self.pipe = pipe
        self.original = pipe.generator.unet
        self.copies = {}
        for name in (pipe.adapter1, pipe.adapter2):
            unet = copy.deepcopy(self.original)
            for module in unet.modules():
                if isinstance(module, BaseTunerLayer):
                    module.merge(adapter_names=[name])
            self.copies[name] = unet

    @torch.inference_mode()
    def __call__(self, lq: torch.Tensor) -> torch.Tensor:
        p, gen = self.pipe, self.pipe.generator
        h, w = lq.shape[-2:]
        try:
            gen.unet = self.copies[p.adapter1]
            x1 = F.interpolate(lq.float(), size=(h * p.m, w * p.m), mode=p.upsample1, align_corners=False).clamp(0, 1)
            y = p.run_stage(x1, None, p.t1, color_fix=p.color_fix_stage1, dtype=p.dtype)
            gen.unet = self.copies[p.adapter2]
            x2 = F.interpolate(y, size=(h * p.m * p.n, w * p.m * p.n), mode=p.upsample2, align_corners=False).clamp(0, 1)
            return p.run_stage(x2, None, p.t2, dtype=p.dtype)
        finally:
            gen.unet = self.original


def run(device: str | None = None, size: str | None = None, iters: int = 3, warmup: int = 1, quick: bool = False,
        latent_tile: int | None = 64, vae_tile: int | None = 512, compile_unet: bool = True) -> list[dict[str, Any]]:
    """Rows per (setting, variant): latency_s, paper_h800_s (real size), peak_mem_mb, max_abs_diff (fused)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    size = size or ("real" if device == "cuda" else "demo")
    if quick:
        iters, warmup = 1, 1 if size == "real" else 0
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    gen = build_generator(size, device, dtype)
    if size == "demo":
        latent_tile = None if latent_tile is None else min(latent_tile, 16)
        vae_tile = None if vae_tile is None else min(vae_tile, 128)
    variants = ["set_adapter", "fused copies"]
    if device == "cuda":
        variants += ["+channels_last"] + (["+channels_last +compile"] if compile_unet else [])
    settings = TABLE3[:1] if quick and size == "demo" else TABLE3
    rows: list[dict[str, Any]] = []
    for variant in variants:
        if "channels_last" in variant:
            gen.unet.to(memory_format=torch.channels_last)
            gen.vae.to(memory_format=torch.channels_last)
        if "compile" in variant:
            gen.unet.compile()  # in place: the module (and its adapters) stay the same objects
        for scale, m, n, inp, paper in settings:
            h = inp if size == "real" else DEMO_INPUTS[inp]
            pipe = TUDSRPipeline(gen, "stage1", "stage2", m=m, n=n, latent_tile=latent_tile,
                                 latent_overlap=(latent_tile or 0) // 2, vae_tile=vae_tile, color_fix="wavelet",
                                 dtype=dtype if dtype != torch.float32 else None)
            lq = torch.rand(1, 3, h, h, generator=torch.Generator().manual_seed(0)).to(device)
            row: dict[str, Any] = {"model": "TUDSR", "size": size, "device": device, "variant": variant,
                                   "setting": f"x{scale} {h}->{h * scale}", "latent_tile": latent_tile,
                                   "vae_tile": vae_tile}
            if variant == "fused copies":
                fused = FusedCopies(pipe)
                with torch.inference_mode():
                    row["max_abs_diff"] = float((fused(lq) - pipe(lq)).abs().max())
                fn = lambda: fused(lq)  # noqa: E731
            else:
                def fn() -> torch.Tensor:
                    with torch.inference_mode():
                        return pipe(lq)
            reset_peak_memory(device)
            row["latency_s"] = time_it(fn, warmup, iters, device)
            row["peak_mem_mb"] = peak_memory_mb(device)
            row["paper_h800_s"] = paper if size == "real" else f"({paper} at {inp}px)"
            row["status"] = "measured"
            rows.append(row)
            if variant == "fused copies":
                del fused
    if device != "cuda":
        rows.append({"model": "TUDSR", "size": "real", "device": "cuda", "variant": "all", "status": "skipped",
                     "reason": "no CUDA"})
    return rows + run_strsr(device, iters, warmup, quick)


def run_strsr(device: str, iters: int = 3, warmup: int = 1, quick: bool = False) -> list[dict[str, Any]]:
    """StrSR tiled inference (``OneStepDiTGenerator.tiled_forward``) at demo size, FLUX.2 and Z-Image backends."""
    from benchmarks.train_step import build

    rows = []
    for module in ("dit_flux2",) if quick else ("dit_flux2", "dit_zimage"):
        model, _ = build(module, "demo", 96, 1, device)
        gen = model.generator.to(device).eval()
        tile, overlap = model.tile, model.tile_overlap
        for lr in (48,) if quick else (48, 96):
            lq = torch.rand(1, 3, lr, lr, generator=torch.Generator().manual_seed(0)).to(device)

            def fn() -> torch.Tensor:
                with torch.inference_mode():
                    up = bicubic_upsample(lq, 4)
                    return gen.tiled_forward(up, lq, tile=tile, overlap=overlap)

            reset_peak_memory(device)
            rows.append({"model": f"StrSR {module[4:]}", "size": "demo", "device": device, "variant": "tiled",
                         "setting": f"x4 {lr}->{lr * 4}", "latent_tile": f"{tile}px/{overlap}",
                         "latency_s": time_it(fn, 0 if quick else warmup, iters, device),
                         "peak_mem_mb": peak_memory_mb(device), "status": "measured"})
        del model
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None)
    parser.add_argument("--size", choices=["demo", "real"], default=None)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--latent-tile", type=int, default=64, help="0: untiled UNet")
    parser.add_argument("--vae-tile", type=int, default=512, help="0: untiled VAE")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--quick", action="store_true")
    a = parser.parse_args(argv)
    rows = run(a.device, a.size, a.iters, a.warmup, a.quick, a.latent_tile or None, a.vae_tile or None,
               not a.no_compile)
    print_table(rows, "Inference latency (TUDSR Table 3 settings; StrSR tiled)")
    print(f"\nwrote {write_json(rows, 'inference')}")


if __name__ == "__main__":
    main()
