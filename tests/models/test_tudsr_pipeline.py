"""TUDSR twice-upsampling inference on a tiny random SD (diffusers AutoencoderKL + UNet2DConditionModel, CPU)."""

from __future__ import annotations

import pytest
import torch

from models.generators import OneStepSDGenerator
from models.inference import TUDSRPipeline, border_gradient_ratio, tile_starts
from models.lora import LoraConfig, adapter_named_parameters
from models.pretrained import Source

# f = 8 (four VAE levels, like SD), UNet factor 2: images are padded to multiples of 16. Attention only at the
# UNet's coarser level and in the VAE mid-block keeps the full-size (untiled) references cheap on CPU.
# scaling_factor 2.8 gives unit-variance latents, as SD's 0.18215 does for the real VAE.
VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
           up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[8, 8, 16, 16], layers_per_block=1,
           latent_channels=4, norm_num_groups=4, sample_size=64, scaling_factor=2.8)
UNET = dict(sample_size=16, in_channels=4, out_channels=4, down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], block_out_channels=[16, 32], layers_per_block=1,
            cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8, use_linear_projection=True)
SCHED = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
             prediction_type="epsilon", clip_sample=False)
LORA = LoraConfig(rank=4)

# Measured on this tiny random model (128 x 128 LR -> 256 x 256, untiled image std 0.166; unrelated images would
# differ by ~0.19): mean |tiled - untiled| = 0.0166 with latent tiles only (2 x 2 tiles of 24, overlap 16) and 0.0345
# with tiled VAE too (2 x 2 tiles of 192 px, overlap 64); see the test for the border gradient ratios.
LATENT_TILED_MEAN_ABS_TOL = 0.03
TILED_MEAN_ABS_TOL = 0.06
SEAM_RATIO_MAX = 1.25


def _base(seed: int = 0) -> OneStepSDGenerator:
    torch.manual_seed(seed)
    return OneStepSDGenerator(vae=Source(config=VAE), unet=Source(config=UNET), scheduler=Source(config=SCHED))


def _randomise(gen: OneStepSDGenerator, name: str, seed: int) -> None:
    """LoRA B is zero at init (adapter = identity): draw it so that the two adapters really differ."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in adapter_named_parameters(gen.unet, name):
            if "lora_B" in pname:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.fixture(scope="module")
def gens(tmp_path_factory: pytest.TempPathFactory) -> dict[str, OneStepSDGenerator]:
    """``both``: one UNet with adapters stage1 + stage2; ``s1`` / ``s2``: separately built, one adapter each."""
    both = _base()
    both.add_adapter("stage1", LORA, trainable=False)
    both.add_adapter("stage2", LORA, trainable=False)
    _randomise(both, "stage1", 1)
    _randomise(both, "stage2", 2)
    d = tmp_path_factory.mktemp("adapters")
    f1, f2 = both.export_adapter(d / "s1.safetensors", "stage1"), both.export_adapter(d / "s2.safetensors", "stage2")
    s1, s2 = _base(), _base()
    s1.load_adapter(f1, "stage1")
    s2.load_adapter(f2, "stage2")
    return {"both": both, "s1": s1, "s2": s2}


def _run(pipe: TUDSRPipeline, x: torch.Tensor, **kw) -> torch.Tensor:
    with torch.inference_mode():
        return pipe(x, **kw)


@pytest.mark.parametrize("hw", [(123, 77), (64, 64)])
@pytest.mark.parametrize("m,n", [(2, 2), (4, 2)])
def test_output_size_exact(gens, hw: tuple[int, int], m: int, n: int) -> None:
    pipe = TUDSRPipeline(gens["both"], m=m, n=n, latent_tile=48, latent_overlap=16, vae_tile=384, vae_overlap=64)
    x = torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(0))
    y = _run(pipe, x)
    assert pipe.scale == m * n
    assert y.shape == (1, 3, hw[0] * m * n, hw[1] * m * n) and y.dtype == torch.float32
    assert y.min() >= 0 and y.max() <= 1 and torch.isfinite(y).all()


def test_single_stage_size(gens) -> None:
    pipe = TUDSRPipeline(gens["both"], adapter2=None, m=4, latent_tile=32, vae_tile=None)
    y = _run(pipe, torch.rand(2, 3, 23, 13))
    assert pipe.scale == 4 and y.shape == (2, 3, 92, 52)


def test_adapter_switching_equals_two_separate_unets(gens) -> None:
    """One UNet switching stage1 -> stage2 == a stage-1-only UNet followed by a stage-2-only UNet."""
    kw = dict(latent_tile=16, latent_overlap=8, vae_tile=None, color_fix="wavelet")
    x = torch.rand(1, 3, 40, 24, generator=torch.Generator().manual_seed(3))
    gens["both"].set_adapter("stage1")
    gens["both"].train()
    y = _run(TUDSRPipeline(gens["both"], "stage1", "stage2", m=2, n=2, t1=200, t2=50, **kw), x)
    assert gens["both"].active_adapter == "stage1" and gens["both"].training  # restored after the call
    gens["both"].eval()
    y1 = _run(TUDSRPipeline(gens["s1"], "stage1", None, m=2, t1=200, **kw), x)
    ref = _run(TUDSRPipeline(gens["s2"], "stage2", None, m=2, t1=50, upsample1="bilinear", **kw), y1)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)
    # and the second pass really used the other adapter
    same = _run(TUDSRPipeline(gens["both"], "stage1", "stage1", m=2, n=2, t1=200, t2=50, **kw), x)
    assert (same - y).abs().mean() > 1e-3


@pytest.mark.parametrize("adapter2", [None, "stage2"])
def test_one_tile_equals_untiled(gens, adapter2: str | None) -> None:
    """Latent 8 x 8 <= latent tile 16 and 64 px <= VAE tile 64: tiling must be a no-op, bit for bit."""
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    m = 4 if adapter2 is None else 2
    tiled = TUDSRPipeline(gens["both"], "stage1", adapter2, m=m, n=2, latent_tile=16, vae_tile=64, vae_overlap=16)
    untiled = TUDSRPipeline(gens["both"], "stage1", adapter2, m=m, n=2, latent_tile=None, vae_tile=None)
    assert torch.equal(_run(tiled, x), _run(untiled, x))


def _borders(length: int, tile: int, overlap: int) -> list[int]:
    """Interior tile edges (starts and ends) along one axis."""
    starts = tile_starts(length, tile, overlap)
    return sorted(set(starts[1:] + [s + tile for s in starts[:-1]]))


def test_large_image_tiled_close_to_untiled_without_seams(gens) -> None:
    """128 x 128 LR -> 256 x 256: latent 32 x 32 in 2 x 2 tiles of 24 (overlap 16), VAE in 2 x 2 tiles of 192 px.

    Random weights are far less local than trained ones (a tile's zero-padded edges and its own GroupNorm statistics
    change the output across a whole small tile; the VAE part dominates), so the gap measured here bounds what real
    weights give; the tolerances are the measured values with margin. Seams: the border gradient ratio (tile edges vs
    the other positions of the VAE's 8-px grid) must stay near the untiled image's ratio at the same positions.
    """
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(5))
    kw = dict(adapter1="stage1", adapter2=None, m=2, color_fix="none")
    untiled = _run(TUDSRPipeline(gens["both"], latent_tile=None, vae_tile=None, **kw), x)  # (1, 3, 256, 256)
    latent = _run(TUDSRPipeline(gens["both"], latent_tile=24, latent_overlap=16, vae_tile=None, **kw), x)
    tiled = _run(TUDSRPipeline(gens["both"], latent_tile=24, latent_overlap=16, vae_tile=192, vae_overlap=64, **kw), x)
    d_lat, d_all = (latent - untiled).abs().mean().item(), (tiled - untiled).abs().mean().item()
    print(f"mean |tiled - untiled|: latent tiles {d_lat:.4f}, latent + VAE tiles {d_all:.4f} "
          f"(max {(tiled - untiled).abs().max().item():.3f}); untiled std {untiled.std().item():.3f}")
    assert 0 < d_lat < LATENT_TILED_MEAN_ABS_TOL
    assert 0 < d_all < TILED_MEAN_ABS_TOL

    borders = sorted({8 * b for b in _borders(32, 24, 16)} | set(_borders(256, 192, 64)))  # [64, 192]
    r_untiled = border_gradient_ratio(untiled, borders, period=8)
    for name, img in (("latent", latent), ("latent + VAE", tiled)):
        r = border_gradient_ratio(img, borders, period=8)
        print(f"border gradient ratio {name}: {r:.3f} (untiled at the same positions {r_untiled:.3f})")
        assert r < SEAM_RATIO_MAX and r < 1.1 * r_untiled


def test_bf16_autocast(gens) -> None:
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(6))
    pipe = TUDSRPipeline(gens["both"], m=2, n=2, latent_tile=16, latent_overlap=8, vae_tile=None)
    ref = _run(pipe, x)
    y = _run(pipe, x, dtype=torch.bfloat16)
    assert y.dtype == torch.float32 and y.shape == ref.shape == (1, 3, 96, 96)
    assert (y - ref).abs().mean() < 0.05


def test_bad_config(gens) -> None:
    with pytest.raises(ValueError):
        TUDSRPipeline(gens["both"], latent_tile=15)  # not a multiple of the UNet factor 2
    with pytest.raises(ValueError):
        TUDSRPipeline(gens["both"], color_fix="histogram")
