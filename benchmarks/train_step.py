"""Seconds per training batch and peak memory of every training module (TUDSR stage 1 / 2, StrSR DiT).

    python -m benchmarks.train_step [--size demo|real] [--modules stage1 stage2 dit_flux2 dit_zimage] [--quick]

Each module is built from its demo YAML through the project CLI (``main.cli_main(..., run=False)``); ``size=real``
swaps in the real-size architectures of :mod:`benchmarks.arch` (random weights, bf16, CUDA only). A plain Lightning
``Trainer`` runs real training batches; :class:`BatchTimer` times each batch (after ``warmup`` batches) from
``on_train_batch_start`` to ``on_train_batch_end`` (data loading and the on-device degradation are not included).
One batch is: stage 1 = one G and one D update; stage 2 = one image = N^2 chunks, each with a G and a D update;
DiT (alternating) = one G *or* one D update, so ``s_per_batch`` is the mean of the two. The DiT's "cached VLM" rows
train as ``data.feature_cache`` does: the features of every training image are precomputed once with the config's
VLM (``datamodules.precompute``), the batches carry them and the condition is cache-only, so the VLM is neither run
nor resident during the timed batches.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

from benchmarks.arch import load_demo, real_size, set_path
from benchmarks.common import peak_memory_mb, print_table, reset_peak_memory, write_json

MODULES = ("stage1", "stage2", "dit_flux2", "dit_zimage")
# (crop, batch, chunk) per size; stage 1 also runs at crop = chunk (the stage-2 comparison)
SIZES = {"demo": {"stage1": (64, 1), "stage2": (64, 1, 32), "dit": (96, 1)},
         "real": {"stage1": (512, 1), "stage2": (1024, 1, 512), "dit": (1024, 1)}}


class BatchTimer(L.Callback):
    """Seconds per training batch after ``warmup`` batches, peak memory over the timed batches, and (optionally)
    the FLOPs of one extra batch counted with ``torch.utils.flop_counter.FlopCounterMode`` (untimed)."""

    def __init__(self, warmup: int, steps: int, count_flops: bool = False) -> None:
        self.warmup, self.steps, self.count_flops = warmup, steps, count_flops
        self.times: list[float] = []
        self.peak_mb = 0.0
        self.flops: int | None = None
        self._t0 = 0.0
        self._counter: Any = None

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self._sync(pl_module)
        if batch_idx == self.warmup:
            reset_peak_memory(pl_module.device)
        if self.count_flops and batch_idx == self.warmup + self.steps:
            from torch.utils.flop_counter import FlopCounterMode

            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self._sync(pl_module)
        dt = time.perf_counter() - self._t0
        if self.warmup <= batch_idx < self.warmup + self.steps:
            self.times.append(dt)
            if batch_idx == self.warmup + self.steps - 1:
                self.peak_mb = peak_memory_mb(pl_module.device)
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops = int(self._counter.get_total_flops())
            self._counter = None


def use_feature_cache(cfg: dict[str, Any], folder: Path, device: str) -> None:
    """Precompute the VLM features of the config's training images into ``folder`` with its own VLM, then make the
    config train from them: ``data.feature_cache`` set, the condition cache-only (``VLMCondition(vlm=None)``)."""
    from datamodules.feature_cache import MANIFEST
    from datamodules.precompute import condition_section, precompute

    precompute(cfg, str(folder), device=device, dtype="bf16" if device == "cuda" else "fp32")
    feature_dim = json.loads((folder / MANIFEST).read_text())["feature_dim"]
    condition_section(cfg)["init_args"] |= {"vlm": None, "feature_dim": feature_dim, "prompt_ids": None}
    set_path(cfg, "data.feature_cache", str(folder))
    gc.collect()  # the VLM built for precomputing is gone before the timed run
    if device == "cuda":
        torch.cuda.empty_cache()


def build(module: str, size: str, crop: int, batch: int, device: str, extra: dict[str, Any] | None = None,
          workdir: Path | None = None, cached: bool = False) -> tuple[L.LightningModule, L.LightningDataModule]:
    """Model and datamodule of ``module`` from its demo config (real-size architectures for ``size="real"``);
    ``cached``: train from a feature cache instead of the VLM (DiT modules, see :func:`use_feature_cache`)."""
    from onestep_sr.cli import cli_main

    cfg = load_demo(module)
    if size == "real":
        cfg = real_size(cfg, module)
    cfg["trainer"] = {"accelerator": "gpu" if device == "cuda" else "cpu", "devices": 1, "logger": False,
                      "callbacks": [], "enable_checkpointing": False}
    set_path(cfg, "data.crop_size", crop)
    set_path(cfg, "data.batch_size", batch)
    set_path(cfg, "data.val_sets", [])
    for dotted, value in (extra or {}).items():
        set_path(cfg, dotted, value)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="bench_"))
    if cached:
        use_feature_cache(cfg, workdir / f"{module}_feature_cache", device)
    path = workdir / f"{module}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cli = cli_main(["--config", str(path)], run=False)
    return cli.model, cli.datamodule


def time_module(model: L.LightningModule, datamodule: L.LightningDataModule | None, device: str, steps: int,
                warmup: int, precision: str, count_flops: bool = False, loader: Any = None) -> BatchTimer:
    """Run ``warmup + steps`` (+1 FLOP-counted) real training batches (from ``datamodule``, or from ``loader``, any
    iterable of batches); return the timer."""
    timer = BatchTimer(warmup, steps, count_flops)
    callbacks: list[L.Callback] = [timer]
    trainer = L.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, precision=precision,
                        max_epochs=1, max_steps=-1, limit_train_batches=warmup + steps + int(count_flops),
                        limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                        default_root_dir=tempfile.mkdtemp(prefix="bench_trainer_"))
    if loader is not None:
        trainer.fit(model, train_dataloaders=loader)
    else:
        trainer.fit(model, datamodule=datamodule)
    return timer


def run(modules: tuple[str, ...] = MODULES, device: str | None = None, size: str = "demo", steps: int = 3,
        warmup: int = 1, quick: bool = False, count_flops: bool | None = None) -> list[dict[str, Any]]:
    """One row per measured configuration: module, variant, size, crop/chunk, s_per_batch, peak_mem_mb, flops.

    ``size="real"`` without CUDA gives rows with ``status="skipped"`` and ``reason="no CUDA"``."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if quick:
        steps, warmup = 1, 1
    count_flops = (device == "cuda") if count_flops is None else count_flops
    precision = "bf16-mixed" if device == "cuda" and size == "real" else "32-true"
    sizes = SIZES[size]
    plans: list[tuple[str, str, dict[str, Any]]] = []  # (module, variant, options)
    for m in modules:
        if m == "stage1":
            plans += [("stage1", "crop", {}), ("stage1", "crop=R", {"at_chunk": True})]
        elif m == "stage2":
            plans.append(("stage2", "2x2 chunks", {}))
        else:
            variants = [("gc off", {"gc": False}), ("gc on", {"gc": True}), ("gc on, cached VLM", {"gc": True, "cached": True})]
            if quick:  # one variant per DiT backend in the CPU smoke run
                variants = variants[2:]
            plans += [(m, v, o) for v, o in variants]
    rows: list[dict[str, Any]] = []
    if size == "real" and device != "cuda":
        return [{"module": m, "variant": v, "size": size, "device": device, "status": "skipped", "reason": "no CUDA"}
                for m, v, _ in plans]
    workdir = Path(tempfile.mkdtemp(prefix="bench_train_"))
    stage1_adapter: Path | None = None
    for m, variant, opts in plans:
        row: dict[str, Any] = {"module": m, "variant": variant, "size": size, "device": device}
        extra: dict[str, Any] = {}
        if m == "stage1":
            crop, batch = sizes["stage1"]
            crop = sizes["stage2"][2] if opts.get("at_chunk") else crop
        elif m == "stage2":
            crop, batch, chunk = sizes["stage2"]
            if stage1_adapter is None:  # an exported stage-1 adapter of the same architecture (random LoRA)
                model, _ = build("stage1", size, sizes["stage1"][0], 1, device, workdir=workdir)
                stage1_adapter = model.generator.export_adapter(workdir / "stage1.safetensors")
                del model
            extra = {"model.init_args.chunk": chunk, "model.init_args.stage1_adapter": str(stage1_adapter)}
            row["chunk"] = chunk
        else:
            crop, batch = sizes["dit"]
            extra = {"model.init_args.generator.init_args.backend.init_args.gradient_checkpointing": opts["gc"]}
        row |= {"crop": crop, "batch": batch}
        try:
            model, dm = build(m, size, crop, batch, device, extra, workdir, cached=opts.get("cached", False))
            if m == "stage1" and stage1_adapter is None:
                stage1_adapter = model.generator.export_adapter(workdir / "stage1.safetensors")
            timer = time_module(model, dm, device, steps, warmup, precision, count_flops)
            row |= {"status": "measured", "steps": len(timer.times),
                    "s_per_batch": sum(timer.times) / max(1, len(timer.times)), "peak_mem_mb": timer.peak_mb}
            if timer.flops is not None:
                row["tflop_per_batch"] = timer.flops / 1e12
        except Exception as err:  # noqa: BLE001 - one failing configuration must not hide the others
            row |= {"status": "failed", "reason": f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"}
        model = dm = None  # free the failed or finished module before the next build
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", nargs="+", default=list(MODULES), choices=MODULES)
    parser.add_argument("--size", choices=["demo", "real"], default="demo")
    parser.add_argument("--device", default=None)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    rows = run(tuple(args.modules), args.device, args.size, args.steps, args.warmup, args.quick)
    print_table(rows, f"Training step ({args.size} size)")
    print(f"\nwrote {write_json(rows, 'train_step')}")


if __name__ == "__main__":
    main()
