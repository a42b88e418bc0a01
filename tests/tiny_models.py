"""Tiny architecture configs shared by the tests: the same diffusers / transformers classes as the real models, with
random weights at toy widths (no weights are downloaded). Importable from any test as ``tiny_models`` (pytest's
``pythonpath`` includes ``tests/``)."""

from __future__ import annotations

# diffusers AutoencoderKL, two blocks (downscale 2)
TINY_VAE = dict(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=4, sample_size=32)
# the Z-Image VAE is an AutoencoderKL with 16 latent channels, its own scaling/shift and no quant convs
TINY_ZIMAGE_VAE = dict(TINY_VAE, latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159,
                       use_quant_conv=False, use_post_quant_conv=False)
# diffusers Flux2Transformer2DModel
TINY_FLUX2 = dict(patch_size=1, in_channels=128, num_layers=1, num_single_layers=1, attention_head_dim=16,
                  num_attention_heads=2, joint_attention_dim=32, timestep_guidance_channels=32, mlp_ratio=2.0,
                  axes_dims_rope=(4, 4, 4, 4), guidance_embeds=False)
# diffusers ZImageTransformer2DModel
TINY_ZIMAGE = dict(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=1, n_refiner_layers=1,
                   n_heads=2, n_kv_heads=2, cap_feat_dim=32, axes_dims=[4, 6, 6], axes_lens=[64, 32, 32])
# transformers Qwen3VLForConditionalGeneration; token ids 60-63 are the image / video / vision start / end tokens
IMAGE_TOKEN, VISION_START, VISION_END = 60, 62, 63
TINY_QWEN3_VL = dict(
    text_config=dict(vocab_size=64, hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=1, head_dim=12, max_position_embeddings=256,
                     rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 2, 2],
                                      "mrope_interleaved": True}),
    vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, patch_size=8, spatial_merge_size=2,
                       temporal_patch_size=2, out_hidden_size=24, num_position_embeddings=64,
                       deepstack_visual_indexes=[0]),
    image_token_id=IMAGE_TOKEN, video_token_id=61, vision_start_token_id=VISION_START, vision_end_token_id=VISION_END,
)
# a prompt holding one image placeholder between the vision start / end tokens
PROMPT_IDS = [1, 2, VISION_START, IMAGE_TOKEN, VISION_END, 5, 6, 7, 3]

# ---- tiny stand-ins written into a hub cache under the real ids (tests/hub_cache.py, tests/test_hub_cache.py) ----
# SD2.1-base: the demo's sizes; the UNet's cross-attention width equals the text encoder's hidden width (real: 1024)
TINY_SD_VAE = dict(down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                   block_out_channels=(16, 32, 32), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                   sample_size=64, scaling_factor=0.18215)
TINY_SD_UNET = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
                    norm_num_groups=8, use_linear_projection=True)
TINY_CLIP_TEXT = dict(vocab_size=64, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                      max_position_embeddings=77, bos_token_id=1, eos_token_id=2, pad_token_id=0)
# DINOv3-ViT-B/16 at toy width: patch 16 and 4 register tokens as the real model, 9 blocks (layer 9 is tapped)
TINY_DINOV3 = dict(hidden_size=32, num_hidden_layers=9, num_attention_heads=2, intermediate_size=64, patch_size=16,
                   num_register_tokens=4, image_size=64)
# timm ConvNeXt (convnext_xxlarge's class): four stages, the real 1024-d CLIP embedding head
TINY_CONVNEXT = dict(depths=[1, 1, 1, 1], dims=[16, 32, 64, 128])
