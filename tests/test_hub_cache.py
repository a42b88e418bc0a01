"""The real configs, unchanged, load every component from a Hugging Face hub cache and run offline.

A temporary ``HF_HOME`` / ``HF_HUB_CACHE`` holds tiny random models (the real classes, ``tests/hub_cache.py``)
under the exact repository ids and subfolders the real configs name; a temporary working folder holds the
VGG16 / VGG19 / DISTS files at the paths the configs name (``weights/...``, real shapes, random values); LPIPS's
linear layers ship with the ``lpips`` package; ``TORCH_HOME`` is empty (nothing may be fetched from it).
Each real config then runs through ``python main.py`` with ``HF_HUB_OFFLINE=1`` and only data, step-count and crop
overrides (plus stage 2's chunk, the crop's counterpart). What proves what:

- every loading path (hub id + subfolder, local weight file, tokenizer, processor, scheduler) resolves offline;
- the components' sizes fit together through the configs' own wiring: the UNet's cross-attention width and the
  text encoder's width, the VLM width and the DiT text width through the adaptive MLP, the DINOv3 layers and its
  depth, stage 2 on stage 1's export, predict on both exports.

Values a tiny model cannot keep are named, and asserted where a ratio survives, in
``test_the_tiny_models_keep_the_real_constraints``. The recipe values (LoRA rank 256 / 32, head widths, learning
rates, tiles, prompt) are the real configs' own, untouched.

The ``python main.py`` runs (subprocesses, a few seconds of start-up each) are in the slow set; the cache's
contents and its loading through the preflight check and timm's layout are checked in the default set.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import hub_cache
from tiny_models import TINY_CLIP_TEXT, TINY_CONVNEXT, TINY_DINOV3, TINY_QWEN3_VL, TINY_SD_UNET, TINY_SD_VAE

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
CROP = 64      # a multiple of DINOv3's patch 16 and of SD's pixel multiple; stage 2: N x R = 2 x 64
DIT_CROP = 96  # StrSR: FDL (VGG19, five stages) needs >= 80 px
TIMEOUT = 600


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> dict:
    """The hub cache, the working folder (``weights/``, ``photos/``) and the subprocess environment."""
    from skimage import data
    from PIL import Image

    base = tmp_path_factory.mktemp("hub")
    cache, work = base / "hf" / "hub", base / "work"
    for write in (hub_cache.write_sd21, hub_cache.write_dinov3, hub_cache.write_flux2, hub_cache.write_zimage,
                  hub_cache.write_qwen3_vl, hub_cache.write_convnext):
        write(cache)
    hub_cache.write_perceptual_weights(work / "weights")
    photos = work / "photos"
    photos.mkdir()
    for name in ("astronaut", "coffee"):  # 512 x 512 and 400 x 600 RGB
        Image.fromarray(getattr(data, name)()).save(photos / f"{name}.png")
    lr = work / "lr"
    lr.mkdir()
    Image.fromarray(data.astronaut()).resize((32, 32)).save(lr / "astronaut.png")
    env = dict(os.environ, HF_HOME=str(base / "hf"), HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1",
               TORCH_HOME=str(base / "torch"), TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return {"cache": cache, "work": work, "photos": photos, "lr": lr, "env": env}


def run_cli(hub: dict, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=hub["work"], env=hub["env"],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def fit_args(hub: dict, config: str, crop: int) -> list[str]:
    """One generator update, the test photos, no validation set, the main process loading data."""
    return ["fit", "--config", str(CONFIGS / config), "--trainer.max_steps", "1", "--data.train_dirs",
            f"[{hub['photos']}]", "--data.crop_size", str(crop), "--data.num_workers", "0", "--data.val_sets", "[]",
            "--trainer.enable_progress_bar", "false"]


def exported(hub: dict, run: str, name: str) -> Path:
    return hub["work"] / "runs" / run / "version_0" / "export" / f"{name}.safetensors"


# ------------------------------------------------------------------------------------------------- the tiny models
def test_the_tiny_models_keep_the_real_constraints() -> None:
    """What the real configs assume of the component sizes, kept by the tiny models (real values in comments)."""
    # DINOv3 layers [3, 6, 9] (configs/method/tudsr.yaml) need >= 9 blocks (ViT-B/16: 12); patch 16, 4 registers
    assert TINY_DINOV3["num_hidden_layers"] >= 9 and TINY_DINOV3["patch_size"] == 16
    assert TINY_DINOV3["num_register_tokens"] == 4
    # SD2.1: the UNet's cross-attention width is the text encoder's width (1024 = 1024); the VAE has 4 latent
    # channels, the UNet's input; the tokenizer and the text encoder agree on 77 positions
    assert TINY_SD_UNET["cross_attention_dim"] == TINY_CLIP_TEXT["hidden_size"]
    assert TINY_SD_VAE["latent_channels"] == TINY_SD_UNET["in_channels"] == 4
    assert TINY_CLIP_TEXT["max_position_embeddings"] == 77
    # the adaptive MLP maps the VLM width (Qwen3-VL-4B: 2560) to the DiT text width: FLUX.2 klein-4B
    # joint_attention_dim 7680 = 3 x 2560, Z-Image cap_feat_dim 2560 = 1 x 2560 (its hidden width: out // 2)
    vlm = TINY_QWEN3_VL["text_config"]["hidden_size"]
    assert hub_cache.flux2_transformer_config()["joint_attention_dim"] == 3 * vlm
    assert hub_cache.zimage_transformer_config()["cap_feat_dim"] == vlm
    # Z-Image's RoPE caption axis must hold the caption (max_tokens 512 of configs/method/strsr.yaml, padded to a
    # multiple of 32) before the image positions start: axes_lens[0] = 1024 in diffusers' default
    assert hub_cache.zimage_transformer_config()["axes_lens"][0] > 512 + 32
    # the CLIP-ConvNeXt discriminator taps stages [0, 1, 2] and the pooled 1024-d CLIP embedding: 4 stages
    assert len(TINY_CONVNEXT["depths"]) == len(TINY_CONVNEXT["dims"]) == 4
    # Not kept (a tiny model cannot): LoRA rank 256 (StrSR) exceeds the tiny DiT's widths (32-96) and rank 32
    # (TUDSR) equals the tiny UNet's; peft accepts both, the update is then not low-rank. The VLM sees the LR at
    # >= 256 x 256 pixels (the config's min_pixels) through an 8 px-patch tiny vision tower, not Qwen3-VL's 16 px.


def test_the_cache_holds_every_component_the_real_configs_name(hub: dict, monkeypatch) -> None:
    """The preflight check of the command line (hub cache + local files) finds nothing missing in the cache."""
    from parsed_configs import load_config  # each repository config parsed once per session
    from onestep_sr.preflight import find_requirements, missing_requirements

    monkeypatch.setenv("HF_HUB_CACHE", str(hub["cache"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(hub["work"])
    for config, subcommand in (("stage1.yaml", "fit"), ("strsr_flux2.yaml", "fit"), ("strsr_zimage.yaml", "fit"),
                               ("predict_x4.yaml", "predict")):
        needed = find_requirements(load_config(CONFIGS / config, subcommand=subcommand))
        missing = {r.target for r in missing_requirements(needed)}
        assert missing <= {"runs/stage1/version_0/export/stage1.safetensors",
                           "runs/stage2/version_0/export/stage2.safetensors"}, (config, missing)
        assert len(needed) > len(missing)


def test_the_convnext_backbone_loads_the_cached_weights(hub: dict, monkeypatch) -> None:
    """timm's hub layout (config.json ``model_args`` + model.safetensors) gives the written weights, not random."""
    from huggingface_hub import constants
    from safetensors.torch import load_file

    from models.discriminators.convnext_clip import CLIPConvNeXtFeatures
    from models.pretrained import Source

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub["cache"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    features = CLIPConvNeXtFeatures(Source(pretrained=hub_cache.CONVNEXT))
    written = load_file(str(hub_cache.snapshot(hub["cache"], hub_cache.CONVNEXT) / "model.safetensors"))
    state = features.model.state_dict()
    assert set(state) == set(written)
    assert all(torch.equal(state[k], written[k]) for k in written)
    assert features.out_channels == [16, 32, 64, 1024]  # stages 0-2 + the CLIP embedding


# --------------------------------------------------------------------------------------------- the real configs
@pytest.fixture(scope="module")
def stage1(hub: dict) -> Path:
    run_cli(hub, *fit_args(hub, "stage1.yaml", CROP))
    return exported(hub, "stage1", "stage1")


@pytest.fixture(scope="module")
def stage2(hub: dict, stage1: Path) -> Path:
    # stage 2's default stage1_adapter is runs/stage1/version_0/export/stage1.safetensors: the run above
    run_cli(hub, *fit_args(hub, "stage2.yaml", 2 * CROP), "--model.init_args.chunk", str(CROP))
    return exported(hub, "stage2", "stage2")


@pytest.mark.slow
def test_stage1_fits_one_step(stage1: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(stage1))
    assert state and all(torch.isfinite(v).all() for v in state.values())
    ranks = {v.shape[0] for k, v in state.items() if "lora_A" in k}
    assert ranks == {32}  # the real config's rank


@pytest.mark.slow
def test_stage2_fits_one_step_on_the_stage1_export(stage2: Path) -> None:
    from safetensors.torch import load_file

    assert stage2.is_file() and load_file(str(stage2))


@pytest.mark.slow
@pytest.mark.parametrize("config", ["predict_x4.yaml", "predict_x8.yaml"])
def test_predict_one_image(hub: dict, stage2: Path, config: str) -> None:
    from PIL import Image

    out = hub["work"] / f"out_{config[:-5]}"
    # the default adapters are runs/stage1/version_0/... and runs/stage2/version_0/...: the fits above
    run_cli(hub, "predict", "--config", str(CONFIGS / config), "--data.predict_dir", str(hub["lr"]),
            "--writer.output_dir", str(out), "--data.num_workers", "0", "--trainer.enable_progress_bar", "false")
    scale = 4 if config == "predict_x4.yaml" else 8
    assert Image.open(out / "astronaut.png").size == (32 * scale, 32 * scale)


@pytest.fixture(scope="module")
def strsr(hub: dict) -> Callable[[str], Path]:
    """Fit one step of ``configs/strsr_<backend>.yaml`` (once per backend); the exported LoRA file."""
    done: dict[str, Path] = {}

    def fit(backend: str) -> Path:
        if backend not in done:
            # pool_size 0: the config's pool of 256 degraded pairs would first degrade 256 crops
            run_cli(hub, *fit_args(hub, f"strsr_{backend}.yaml", DIT_CROP),
                    "--data.degradation", "{init_args: {pool_size: 0}}")
            done[backend] = exported(hub, f"strsr_{backend}", "strsr")
        return done[backend]

    return fit


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["flux2", "zimage"])
def test_strsr_fits_one_step(strsr: Callable[[str], Path], backend: str) -> None:
    from safetensors.torch import load_file

    lora = strsr(backend)
    state = load_file(str(lora))
    assert {v.shape[0] for k, v in state.items() if "lora_A" in k} == {256}  # the real config's rank
    mlp = load_file(str(lora.with_name("strsr_mlp.safetensors")))
    # the adaptive MLP: VLM width -> width / 2 x text ratio -> the DiT's text width (FLUX.2 3 x, Z-Image 1 x)
    ratio = hub_cache.FLUX2_TEXT_RATIO if backend == "flux2" else 1
    assert mlp["net.0.weight"].shape == (ratio * hub_cache.VLM_WIDTH // 2, hub_cache.VLM_WIDTH)
    assert mlp["net.2.weight"].shape == (ratio * hub_cache.VLM_WIDTH, ratio * hub_cache.VLM_WIDTH // 2)
    assert all(torch.isfinite(v).all() for v in [*state.values(), *mlp.values()])


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["flux2", "zimage"])
def test_strsr_predict_one_image(hub: dict, strsr: Callable[[str], Path], backend: str) -> None:
    """StrSR inference on the StrSR fit's export (the config's documented ``weights`` override; its default names
    the released folder ``pretrained/StrSR-*``)."""
    from PIL import Image

    config = CONFIGS / f"predict_strsr_{backend}.yaml"
    out = hub["work"] / f"out_strsr_{backend}"
    run_cli(hub, "predict", "--config", str(config), "--model.init_args.weights", str(strsr(backend)),
            "--data.predict_dir", str(hub["lr"]), "--writer.output_dir", str(out), "--data.num_workers", "0",
            "--trainer.enable_progress_bar", "false")
    assert Image.open(out / "astronaut.png").size == (128, 128)  # x4


@pytest.fixture(scope="module")
def dit_stage2(hub: dict, strsr: Callable[[str], Path]) -> Callable[[str], Path]:
    """Fit one step of ``configs/strsr_stage2_<backend>.yaml`` on its default stage-1 file (the StrSR fit's export),
    N x R = 2 x 96; the exported stage-2 LoRA file."""
    done: dict[str, Path] = {}

    def fit(backend: str) -> Path:
        if backend not in done:
            strsr(backend)
            run_cli(hub, *fit_args(hub, f"strsr_stage2_{backend}.yaml", 2 * DIT_CROP), "--model.init_args.chunk",
                    str(DIT_CROP), "--data.degradation", "{init_args: {pool_size: 0}}")
            done[backend] = exported(hub, f"strsr_stage2_{backend}", "stage2")
        return done[backend]

    return fit


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["flux2", "zimage"])
def test_dit_stage2_fits_one_step_on_the_strsr_export(dit_stage2: Callable[[str], Path], backend: str) -> None:
    """configs/strsr_stage2_<backend>.yaml on its default stage-1 file, the StrSR fit's export: N x R = 2 x 96."""
    from safetensors.torch import load_file

    state = load_file(str(dit_stage2(backend)))
    assert {v.shape[0] for k, v in state.items() if "lora_A" in k} == {256}


@pytest.mark.slow
def test_dit_twice_upsampling_predicts_on_both_exports(hub: dict, dit_stage2: Callable[[str], Path]) -> None:
    """configs/predict_strsr2_x4_flux2.yaml on its default adapters, the two DiT fits above: 32 px -> 128 px."""
    from PIL import Image

    dit_stage2("flux2")
    out = hub["work"] / "out_strsr2_x4_flux2"
    run_cli(hub, "predict", "--config", str(CONFIGS / "predict_strsr2_x4_flux2.yaml"), "--data.predict_dir",
            str(hub["lr"]), "--writer.output_dir", str(out), "--data.num_workers", "0",
            "--trainer.enable_progress_bar", "false")
    image = Image.open(out / "astronaut.png")
    assert image.size == (128, 128)
    assert len(set(image.getdata())) > 1000  # a picture, not a constant or blank tile
