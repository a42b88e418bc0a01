"""Real-size smoke on the CPU: TUDSR stage 1 and stage 2 with the released architectures (random weights).

The real configs (``configs/stage1.yaml``, ``configs/stage2.yaml``) are loaded unchanged except for their weight
sources (:func:`benchmarks.arch.offline`: SD2.1-base UNet / VAE / text encoder, DINOv3-ViT-B/16, VGG16 at their
real sizes), the data (the bundled photos, small crops), fp32 (bf16 convolutions are far too slow on these CPUs) and
one generator update. A Lightning ``Trainer`` fits one batch: one G and one D update (stage 2: the 2 x 2 chunks of
one image, accumulated into one update each). Checked: every logged loss term is finite, the trained adapter and
the discriminator heads changed, and no other parameter did (frozen UNet, VAE, DINOv3, VGG bit-identical).

Slow (several GB and a minute or two of CPU): ``python -m pytest -m slow tests/benchmarks/test_real_size_smoke.py -s``
prints the time of each fit and the peak RSS of each stage (module build included). FLUX.2 klein-4B (~16 GB of fp32 weights, ~20 GB with the
discriminator and the loss networks) and Z-Image-6B (~25 GB) do not fit this 24 GB machine in fp32: their real-size
steps are covered by the planner (``python -m benchmarks.plan``) instead.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

pytestmark = pytest.mark.slow


def _peak_rss_gib() -> float:
    """This process's peak resident set (GiB) since :func:`_reset_peak_rss`."""
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 2**20


def _reset_peak_rss() -> None:
    """Give freed heap memory back to the system and restart the peak-RSS window (Linux)."""
    import ctypes

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _fingerprints(model: torch.nn.Module) -> dict[str, tuple[float, torch.Tensor]]:
    """Per parameter: its sum (float64) and 64 strided values, enough to see any update without a full copy."""
    out = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().flatten()
            out[name] = (float(flat.double().sum()), flat[:: max(1, flat.numel() // 64)][:64].clone())
    return out


def _changed(before: dict[str, tuple[float, torch.Tensor]], after: dict[str, tuple[float, torch.Tensor]]) -> set[str]:
    return {n for n in before if before[n][0] != after[n][0] or not torch.equal(before[n][1], after[n][1])}


def _config(name: str, tmp: Path, crop: int, extra: dict[str, Any]) -> Path:
    from benchmarks.arch import offline, set_all, set_path
    from parsed_configs import load_config  # each repository config parsed once per session

    cfg = offline(load_config(Path(__file__).resolve().parents[2] / "configs" / name))
    set_all(cfg["model"], "dtype", "fp32")
    cfg["trainer"] = {"accelerator": "cpu", "devices": 1, "precision": "32-true", "logger": False, "callbacks": [],
                      "enable_checkpointing": False}
    cfg["data"].update(train_dirs=None, crop_size=crop, batch_size=1, num_workers=0, val_sets=[], epoch_length=4)
    set_path(cfg, "data.degradation.init_args.preset", "light")  # a 16-32 px LR keeps some content
    for dotted, value in extra.items():
        set_path(cfg, dotted, value)
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _fit_one_update(config: Path, tmp: Path) -> tuple[Any, dict[str, float], float]:
    """Build the module and datamodule from ``config`` through the CLI, fit until one generator update; returns the
    module, the logged scalars and the seconds of the fit."""
    import lightning as L

    from onestep_sr.cli import cli_main

    torch.manual_seed(0)
    cli = cli_main(["--config", str(config)], run=False)
    model, datamodule = cli.model, cli.datamodule
    cli.__dict__.clear()  # the CLI's own trainer and config hold the module: release them with it later
    before = _fingerprints(model)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", max_steps=1, limit_val_batches=0,
                        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(tmp))
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    seconds = time.perf_counter() - start
    assert trainer.global_step == 1  # one generator update (the step axis counts generator updates)
    changed = _changed(before, _fingerprints(model))
    trainable = model.trainable_names()
    assert changed <= trainable, f"frozen parameters changed: {sorted(changed - trainable)[:5]}"
    assert any(n.startswith("generator.") and ".lora_B." in n for n in changed), "the adapter did not train"
    assert any(n.startswith("discriminator.heads.") for n in changed), "the discriminator heads did not train"
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for key in ("train/g_total", "train/d_total"):
        assert key in metrics, sorted(metrics)
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    assert not bad, f"non-finite losses: {bad}"
    return model, metrics, seconds


def test_stage1_then_stage2_real_size(tmp_path: Path) -> None:
    _reset_peak_rss()
    config = _config("stage1.yaml", tmp_path, 64, {"model.init_args.accumulate": 1})
    model, metrics, seconds = _fit_one_update(config, tmp_path)
    unet_params = sum(p.numel() for p in model.generator.unet.parameters())
    assert unet_params > 800e6  # the real SD2.1 UNet (865 M) with its rank-32 adapter, not a demo one
    adapter = model.generator.export_adapter(tmp_path / "stage1.safetensors")
    print(f"\nstage 1 (crop 64, fp32): one G + one D update in {seconds:.1f} s, peak RSS {_peak_rss_gib():.2f} GiB, "
          f"g_total {metrics['train/g_total']:.4f}")
    del model
    _reset_peak_rss()

    config = _config("stage2.yaml", tmp_path, 128, {"model.init_args.stage1_adapter": str(adapter),
                                                    "model.init_args.chunk": 64})
    model, metrics, seconds = _fit_one_update(config, tmp_path)
    assert set(model.generator.adapters) == {"stage1", "stage2"} and model.generator.adapter_name == "stage2"
    print(f"stage 2 (crop 128 = 2 x 2 chunks of 64, fp32): one G + one D update in {seconds:.1f} s, peak RSS "
          f"{_peak_rss_gib():.2f} GiB, g_total {metrics['train/g_total']:.4f}")
