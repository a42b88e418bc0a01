"""Real-size architecture configs (random weights) for the GPU benchmarks, and the patching of the demo YAMLs.

The demo configs (``configs/demo/*.yaml``) build every component from an architecture ``config``; a real-size run
replaces those dicts by the ones below (the same classes with the released architectures), so the benchmarks never
need weights. Sources: the public model configs (``config.json``) of SD2.1-base (VAE, UNet), DINOv3 ViT-B/16,
FLUX.2 klein-4B and ConvNeXt-XXLarge (CLIP). The Qwen3-VL-4B values are the published
``config.json`` numbers as remembered here; they only matter for the rows that run the VLM (not the cached rows).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any


__all__ = ["SD21_VAE", "SD21_UNET", "DINOV3_VITB16", "FLUX2_KLEIN4B", "FLUX2_VAE", "CONVNEXT_XXL", "QWEN3VL_4B",
           "DEMO_CONFIGS", "load_demo", "real_size", "set_path"]

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIGS = {m: ROOT / "configs" / "demo" / f"{f}.yaml" for m, f in
                [("stage1", "stage1"), ("stage2", "stage2"), ("dit_flux2", "strsr_flux2"), ("dit_zimage", "strsr_zimage")]}

SD21_VAE: dict[str, Any] = {  # stabilityai/stable-diffusion-2-1-base vae/config.json
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "block_out_channels": [128, 256, 512, 512], "sample_size": 768, "scaling_factor": 0.18215,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
SD21_UNET: dict[str, Any] = {  # stabilityai/stable-diffusion-2-1-base unet/config.json
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280], "attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024,
    "use_linear_projection": True, "norm_num_groups": 32,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
DINOV3_VITB16: dict[str, Any] = {  # facebook/dinov3-vitb16-pretrain-lvd1689m
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "patch_size": 16, "num_register_tokens": 4, "image_size": 224, "layerscale_value": 1.0,
}
FLUX2_KLEIN4B: dict[str, Any] = {  # black-forest-labs/FLUX.2-klein-base-4B transformer
    "patch_size": 1, "in_channels": 128, "num_layers": 5, "num_single_layers": 20, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 7680, "timestep_guidance_channels": 256, "mlp_ratio": 3.0,
    "axes_dims_rope": [32, 32, 32, 32], "guidance_embeds": False,
}
FLUX2_VAE: dict[str, Any] = {  # AutoencoderKLFlux2 (32 latent channels, 2x2 patchified to 128)
    "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 1024,
    "latent_channels": 32,
}
ZIMAGE_TURBO: dict[str, Any] = {  # Tongyi-MAI/Z-Image-Turbo transformer (6B)
    "all_patch_size": [2], "all_f_patch_size": [1], "in_channels": 16, "dim": 3840, "n_layers": 30,
    "n_refiner_layers": 2, "n_heads": 30, "n_kv_heads": 30, "cap_feat_dim": 2560, "axes_dims": [32, 48, 48],
    "axes_lens": [1536, 512, 512],
}
ZIMAGE_VAE: dict[str, Any] = {  # FLUX.1-style 16-channel VAE
    "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 1024,
    "latent_channels": 16, "scaling_factor": 0.3611, "shift_factor": 0.1159, "use_quant_conv": False,
    "use_post_quant_conv": False,
}
CONVNEXT_XXL: dict[str, Any] = {  # timm convnext_xxlarge.clip_laion2b_soup trunk
    "depths": [3, 4, 30, 3], "dims": [384, 768, 1536, 3072], "num_classes": 1024, "ls_init_value": 1.0,
}
QWEN3VL_4B: dict[str, Any] = {  # Qwen/Qwen3-VL-4B-Instruct (values from memory: check before quoting VLM rows)
    "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "text_config": {"vocab_size": 151936, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
                    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                    "max_position_embeddings": 262144,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                                        "mrope_interleaved": True}},
    "vision_config": {"depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16, "patch_size": 16,
                      "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 2560,
                      "num_position_embeddings": 2304, "deepstack_visual_indexes": [5, 11, 17]},
}
# <|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe ...<|im_end|> (token ids, abbreviated)
QWEN3VL_PROMPT_IDS = [151644, 872, 198, 151652, 151655, 151653, 74785, 419, 2168, 304, 7716, 13, 151645]


def set_path(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    """``cfg["a"]["b"]["c"] = value`` for ``dotted="a.b.c"`` (the intermediate dicts must exist)."""
    *head, last = dotted.split(".")
    node = cfg
    for key in head:
        node = node[key]
    node[last] = copy.deepcopy(value)


def load_demo(module: str) -> dict[str, Any]:
    """The demo config of ``module`` (stage1, stage2, dit_flux2, dit_zimage) as a dict: composed and merged as the
    CLI resolves it (every default filled in, nothing instantiated)."""
    from onestep_sr.config import load_config

    return load_config(DEMO_CONFIGS[module])


_G = "model.init_args.generator.init_args"
_D = "model.init_args.discriminator.init_args"
REAL_PATCHES: dict[str, dict[str, Any]] = {
    "sd": {f"{_G}.vae.config": SD21_VAE, f"{_G}.unet.config": SD21_UNET, f"{_G}.dtype": "bf16",
           f"{_G}.lora.rank": 32, f"{_G}.lora.alpha": 32,
           f"{_D}.backbone.config": DINOV3_VITB16, f"{_D}.layers": [3, 6, 9], f"{_D}.head_width": 128,
           f"{_D}.dtype": "bf16"},
    "dit_flux2": {f"{_G}.backend.init_args.transformer.config": FLUX2_KLEIN4B,
                  f"{_G}.backend.init_args.vae.config": FLUX2_VAE, f"{_G}.backend.init_args.dtype": "bf16"},
    "dit_zimage": {f"{_G}.backend.init_args.transformer.config": ZIMAGE_TURBO,
                   f"{_G}.backend.init_args.vae.config": ZIMAGE_VAE, f"{_G}.backend.init_args.dtype": "bf16"},
    "dit": {f"{_G}.condition.init_args.vlm.config": QWEN3VL_4B,
            f"{_G}.condition.init_args.prompt_ids": QWEN3VL_PROMPT_IDS,
            f"{_G}.condition.init_args.max_tokens": 512, f"{_G}.condition.init_args.dtype": "bf16",
            f"{_G}.condition.init_args.min_pixels": 200704,
            f"{_G}.lora": {"rank": 256, "alpha": 256, "init": "gaussian"},
            f"{_D}.backbone.config": CONVNEXT_XXL, f"{_D}.head_width": 512, f"{_D}.dtype": "bf16"},
}


def real_size(cfg: dict[str, Any], module: str) -> dict[str, Any]:
    """Copy of a demo config dict with every architecture replaced by the real-size one (bf16 bases)."""
    cfg = copy.deepcopy(cfg)
    groups = ["sd"] if module in ("stage1", "stage2") else ["dit", module]
    for group in groups:
        for dotted, value in REAL_PATCHES[group].items():
            set_path(cfg, dotted, value)
    return cfg
