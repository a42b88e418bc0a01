"""Condition encoders: adaptive MLP, fixed text embedding, Qwen3-VL features of the raw LR."""

from __future__ import annotations

import pytest
import torch

import math

from models.conditions import AdaptiveMLP, TextEmbeddingCondition, VLMCondition
from models.conditions.qwen_resize import processor_size, released_resize, to_8bit, vl_utils_size
from models.conditions.vlm import RELEASED_CODE_PROMPT, qwen_vl_patchify, smart_resize
from models.pretrained import Source

IMAGE, VSTART, VEND = 60, 62, 63
TINY_QWEN3_VL = dict(
    text_config=dict(vocab_size=72, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
                     rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2],
                                      "mrope_interleaved": True}),
    vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=8, spatial_merge_size=2,
                       temporal_patch_size=2, out_hidden_size=32, num_position_embeddings=64,
                       deepstack_visual_indexes=[1]),
    image_token_id=IMAGE, video_token_id=61, vision_start_token_id=VSTART, vision_end_token_id=VEND,
)
SPECIALS = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_start|>", "<|im_end|>"]  # 60..65
# "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>prompt...<|im_end|>\n<|im_start|>assistant\n", as ids
PROMPT_IDS = [1, 2, VSTART, IMAGE, VEND, 5, 6, 7, 8, 9, 3, 1, 4]


@pytest.fixture(scope="module")
def vlm() -> VLMCondition:
    """The processor's sizing alone (``pre_resize_factor=None``), compared with transformers' processor below."""
    torch.manual_seed(0)
    return VLMCondition(Source(config=TINY_QWEN3_VL), prompt_ids=PROMPT_IDS, dtype="fp32", min_pixels=16 * 16,
                        max_tokens=512, pre_resize_factor=None)


def test_adaptive_mlp_is_linear_silu_linear() -> None:
    torch.manual_seed(0)
    mlp = AdaptiveMLP(in_dim=6, out_dim=10)
    assert mlp.hidden == 5
    x = torch.randn(2, 3, 6)
    l1, l2 = mlp.net[0], mlp.net[2]
    h = x @ l1.weight.T + l1.bias
    ref = (h * torch.sigmoid(h)) @ l2.weight.T + l2.bias
    torch.testing.assert_close(mlp(x), ref)
    assert AdaptiveMLP(2560, 7680).net[0].out_features == 3840 and AdaptiveMLP(2560, 7680, hidden=64).hidden == 64


def test_text_embedding_zero_and_file(tmp_path) -> None:
    from safetensors.torch import save_file

    cond = TextEmbeddingCondition(dim=8, length=4)
    out = cond(None, 3)
    assert out.shape == (3, 4, 8) and out.abs().sum() == 0 and cond.feature_dim == 8
    assert "embedding" not in cond.state_dict()  # frozen data stays out of checkpoints
    emb = torch.randn(1, 5, 6)
    save_file({"prompt_embeds": emb}, str(tmp_path / "e.safetensors"))
    cond = TextEmbeddingCondition(str(tmp_path / "e.safetensors"))
    torch.testing.assert_close(cond(torch.rand(2, 3, 8, 8), 2), emb.expand(2, -1, -1))
    with pytest.raises(ValueError):
        TextEmbeddingCondition()


def test_preprocessing_matches_transformers_image_processor() -> None:
    from transformers import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

    for h, w, lo, hi in [(64, 96, 256, 10**6), (50, 70, 64 * 64, 10**6), (300, 200, 16, 128 * 128)]:
        assert smart_resize(h, w, 16, lo, hi) == hf_smart_resize(h, w, 16, lo, hi)
    proc = Qwen2VLImageProcessor(patch_size=8, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3,
                                 image_std=[0.5] * 3, do_resize=False)
    img = (torch.rand(2, 3, 32, 48) * 255).round().to(torch.uint8)
    ref = proc(images=[img[0], img[1]], return_tensors="pt")
    ours, gh, gw = qwen_vl_patchify((img.float() / 255 - 0.5) / 0.5, 8, 2, 2)
    assert (gh, gw) == (4, 6) and ref["image_grid_thw"].tolist() == [[1, 4, 6]] * 2
    torch.testing.assert_close(ours, ref["pixel_values"], rtol=0, atol=1e-6)


def test_vlm_keeps_text_tokens_only(vlm: VLMCondition) -> None:
    torch.manual_seed(1)
    lq = torch.rand(2, 3, 32, 32)
    feats = vlm(lq, 2)
    n_text = len(PROMPT_IDS) - 1  # every id but the image placeholder
    assert feats.shape == (2, n_text, 32) and vlm.feature_dim == 32
    # Independent reference: the full model on transformers-preprocessed pixels, image rows removed by hand.
    pixel_values, grid = vlm.preprocess(lq)
    n_img = 4 * 4 // 4  # 32x32 -> 4x4 patches of 8 -> 2x2 merged tokens
    ids = torch.tensor([PROMPT_IDS[:3] + [IMAGE] * n_img + PROMPT_IDS[4:]] * 2)
    with torch.no_grad():
        hs = vlm.vlm(input_ids=ids, pixel_values=pixel_values, image_grid_thw=grid, attention_mask=torch.ones_like(ids),
                     mm_token_type_ids=(ids == IMAGE).int(), output_hidden_states=True).hidden_states[-1]
    keep = [i for i in range(ids.shape[1]) if ids[0, i] != IMAGE]
    torch.testing.assert_close(feats, hs[:, keep])
    # The image is really seen: another LR changes the text-position features.
    assert not torch.allclose(vlm(torch.rand(2, 3, 32, 32), 2), feats, atol=1e-4)
    assert not feats.requires_grad


def test_vlm_truncation_and_resize(vlm: VLMCondition) -> None:
    vlm.max_tokens = 5
    try:
        out = vlm(torch.rand(1, 3, 20, 28), 1)  # resized to 16x32 (multiples of 16)
    finally:
        vlm.max_tokens = 512
    assert out.shape == (1, 5, 32)
    assert vlm.preprocess(torch.rand(1, 3, 20, 28))[1].tolist() == [[1, 2, 4]]


def test_vlm_is_frozen_and_eval(vlm: VLMCondition) -> None:
    vlm.train()
    assert not vlm.training and not vlm.vlm.training
    assert all(not p.requires_grad for p in vlm.parameters())
    assert not hasattr(vlm.vlm, "lm_head")  # only vision tower + language model are kept
    with pytest.raises(ValueError):
        VLMCondition(Source(config=TINY_QWEN3_VL), prompt_ids=[1, 2, 3], dtype="fp32")  # no image placeholder
    cached_only = VLMCondition(None, feature_dim=2560)
    assert cached_only.feature_dim == 2560 and cached_only.needs_adapter
    with pytest.raises(RuntimeError):
        cached_only(torch.rand(1, 3, 32, 32), 1)


@pytest.fixture(scope="module")
def processor_dir(tmp_path_factory) -> str:
    """A tiny Qwen3-VL processor saved to disk (word-level tokenizer, Qwen chat template), loadable offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2VLImageProcessor
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    words = ["[UNK]", "user", "assistant", "Describe", "this", "image", "in", "detail."]
    words += [f"w{i}" for i in range(60 - len(words))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(SPECIALS)
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}"
                "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                "{% endif %}")
    image_processor = Qwen2VLImageProcessor(patch_size=8, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3,
                                            image_std=[0.5] * 3, min_pixels=16 * 16, max_pixels=4096 * 4096)
    proc = Qwen3VLProcessor(image_processor=image_processor, tokenizer=PreTrainedTokenizerFast(tokenizer_object=tok,
                            unk_token="[UNK]"), video_processor=Qwen3VLVideoProcessor(), chat_template=template)
    path = tmp_path_factory.mktemp("qwen3vl_processor")
    proc.save_pretrained(str(path))
    return str(path)


def test_vlm_with_processor_matches_the_processor_pipeline(vlm: VLMCondition, processor_dir: str) -> None:
    from transformers import AutoProcessor

    cond = VLMCondition(Source(config=TINY_QWEN3_VL), processor=Source(pretrained=processor_dir), dtype="fp32",
                        min_pixels=16 * 16, prompt="Describe this image in detail.", pre_resize_factor=None)
    cond.vlm.load_state_dict(vlm.vlm.state_dict())
    assert cond.prompt_ids == [64, 1, 62, 60, 63, 3, 4, 5, 6, 7, 65, 64, 2]
    # Reference: the released code's path, i.e. the processor on uint8 images, then image positions removed.
    proc = AutoProcessor.from_pretrained(processor_dir, local_files_only=True)
    img = (torch.rand(2, 3, 32, 48) * 255).round().to(torch.uint8)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": cond.prompt}]}]
    text = proc.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = proc(text=[text, text], images=[img[0], img[1]], return_tensors="pt")
    with torch.no_grad():
        hidden = cond.vlm(**inputs).last_hidden_state
    keep = inputs["input_ids"][0] != IMAGE
    ours = cond(img.float() / 255, 2)
    torch.testing.assert_close(ours, hidden[:, keep], rtol=1e-4, atol=1e-5)
    assert ours.shape[1] == len(cond.prompt_ids) - 1


def qwen_vl_utils_smart_resize(height: int, width: int, factor: int) -> tuple[int, int]:
    """Re-implementation of ``smart_resize`` of qwen-vl-utils (QwenLM/Qwen3-VL at commit
    004d5e0a0d4514ce8945356ae8c969f4dc0080dc, ``qwen-vl-utils/src/qwen_vl_utils/vision_process.py``) with the
    defaults ``fetch_image`` passes: min_pixels = 4 * factor^2, max_pixels = 16384 * factor^2."""
    min_pixels, max_pixels = 4 * factor * factor, 16384 * factor * factor
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


SIZES = [(256, 256), (255, 257), (128, 96), (24, 24), (13, 40), (700, 500), (1024, 768), (3000, 4000),
         (5000, 100), (10, 1900), (42, 42), (14, 14)]


def test_released_sizing_follows_both_smart_resize_rules() -> None:
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

    for h, w in SIZES:
        assert vl_utils_size(h, w) == qwen_vl_utils_smart_resize(h, w, 28), (h, w)
        # then the Qwen3-VL-4B processor: patch 16 x merge 2, 65,536 .. 16,777,216 pixels
        h1, w1 = vl_utils_size(h, w)
        assert processor_size(h1, w1, 32, 256 * 256, 4096 * 4096) == hf_smart_resize(h1, w1, 32, 256 * 256,
                                                                                     4096 * 4096), (h, w)
    assert smart_resize is processor_size
    # the StrSR case: a 1024 crop at x4 gives a 256 LR, resized to 252 (multiple of 28), then back to 256
    assert vl_utils_size(256, 256) == (252, 252) and processor_size(252, 252, 32, 256 * 256, 4096 * 4096) == (256, 256)
    assert vl_utils_size(24, 24) == (56, 56)  # below 4 tokens of 28 px: scaled up
    with pytest.raises(ValueError, match="aspect ratio"):
        vl_utils_size(10, 2500)


def test_released_preprocessing_matches_pil_then_the_processor() -> None:
    """Our batched released sizing against the released path: the uint8 LR resized by PIL (bicubic, what
    ``fetch_image`` calls) to the qwen-vl-utils size, then transformers' Qwen2VLImageProcessor."""
    from PIL import Image
    from transformers import Qwen2VLImageProcessor

    proc = Qwen2VLImageProcessor(patch_size=8, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3,
                                 image_std=[0.5] * 3, min_pixels=16 * 16, max_pixels=4096 * 4096)
    torch.manual_seed(2)
    lq = to_8bit(torch.rand(2, 3, 40, 60).clamp(0, 1))  # the degraded LR, on 8-bit levels
    torch.manual_seed(0)
    cond = VLMCondition(Source(config=TINY_QWEN3_VL), prompt_ids=PROMPT_IDS, dtype="fp32", min_pixels=16 * 16)
    assert cond.pre_resize_factor == 28 and cond.prompt == RELEASED_CODE_PROMPT  # the defaults
    pixel_values, grid = cond.preprocess(lq)
    size = vl_utils_size(40, 60)  # 28 x 56 is under 4 tokens of 28 px: scaled up to 56 x 84
    pil = [Image.fromarray((x * 255).round().byte().permute(1, 2, 0).numpy()).resize((size[1], size[0]))
           for x in lq]
    ref = proc(images=pil, return_tensors="pt")
    assert size == (56, 84)
    assert grid.tolist() == ref["image_grid_thw"].tolist() == [[1, 8, 10]] * 2  # 56x84 -> 64x80 -> 8x10 patches
    # the same filter and 8-bit passes as PIL, then torchvision's uint8 resize: rounding may differ by a level
    diff = (pixel_values - ref["pixel_values"]).abs() * 0.5 * 255  # in 8-bit levels
    assert diff.max() <= 2 + 1e-3 and diff.mean() < 0.1
    # without the pre-resize the image would go straight to 32x64: another grid
    direct = VLMCondition(Source(config=TINY_QWEN3_VL), prompt_ids=PROMPT_IDS, dtype="fp32", min_pixels=16 * 16,
                          pre_resize_factor=None)
    assert direct.preprocess(lq)[1].tolist() == [[1, 4, 8]] * 2
    assert released_resize(lq, 16, 16 * 16, 4096 * 4096).shape[-2:] == (64, 80)
