"""Frozen Qwen3-VL condition encoder E_VLM of StrSR (paper sec. 3.2, eq. 5).

The VLM sees the *raw LR image* (before the bicubic resize-back) with a fixed prompt (default: the released code's
long prompt). One forward pass, no generation: the last hidden state is kept at the text-token positions only
(every position that is not an image token, i.e. chat-template, vision start/end and prompt tokens, as in the
released code) and truncated to ``max_tokens``. The trainable adaptive MLP (eq. 5) is owned by the generator.

Preprocessing is our own batched tensor code (no PIL round trip). Sizing (:mod:`models.conditions.qwen_resize`):
by default as released, the 8-bit LR resized by ``qwen_vl_utils``' rule (factor 28) and then by the processor's
(``pre_resize_factor=None``: the processor's alone, on the float LR). Then the maths of transformers'
``Qwen2VLImageProcessor`` used by Qwen3-VL: normalise with mean/std, cut into
``temporal_patch_size x patch_size x patch_size`` patches ordered by merge window -> ``pixel_values``
(B * gh * gw, 3 * T * P * P) and ``image_grid_thw`` (B, 3). The prompt token ids are built once: from the real
processor's chat template (``processor`` given) or taken verbatim from ``prompt_ids`` (tiny random VLMs, for which no
tokenizer can be downloaded). Either way the ids hold exactly one image placeholder token (``config.image_token_id``)
which is expanded to the image's token count at run time, as the processor does. In transformers 5 Qwen3-VL needs
``mm_token_type_ids`` (1 at image tokens) when images are passed; it is built here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.conditions.qwen_resize import VL_UTILS_FACTOR, processor_resize, processor_size, released_resize
from models.conditions.text import ConditionEncoder
from models.pretrained import Source, freeze, from_hf, load_or_build, resolve_dtype

__all__ = ["VLMCondition", "smart_resize", "qwen_vl_patchify", "DEFAULT_PROMPT", "RELEASED_CODE_PROMPT",
           "SHORT_PROMPT"]

# The released StrSR code's fixed prompt (jkwang28/StrSR, HYPIR/utils/captioner.py, ``IMAGE_DESCRIPTION_PROMPT``,
# typo included), used by its trainers and test scripts: the default (the paper states no prompt).
RELEASED_CODE_PROMPT = (
    "Descibe this image in detail, especially the text in image. Cinematic, hyper sharpness, highly detailed, "
    "perfect without deformations. Camera, hyper detailed photo, realistic maximum detail, 32k, Color. Grading, "
    "ultra HD, extreme meticulous detailing, skin pore detailing"
)
DEFAULT_PROMPT = RELEASED_CODE_PROMPT
SHORT_PROMPT = "Describe this image in detail."  # our former default (the paper names no prompt)
smart_resize = processor_size  # the processor's size rule (transformers' ``smart_resize``)


def qwen_vl_patchify(x: Tensor, patch: int, merge: int, temporal: int) -> tuple[Tensor, int, int]:
    """(B, C, H, W) normalised image -> (B * gh * gw, C * T * P * P) patches in merge-window order, gh, gw."""
    b, c, h, w = x.shape
    gh, gw = h // patch, w // patch
    p = x.reshape(b, c, gh // merge, merge, patch, gw // merge, merge, patch)
    p = p.permute(0, 2, 5, 3, 6, 1, 4, 7)  # (B, gh/m, gw/m, m, m, C, P, P)
    p = p.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, temporal, -1, -1)  # a still image repeats in time
    return p.reshape(b * gh * gw, c * temporal * patch * patch), gh, gw


def _chat_prompt_ids(processor: Source, prompt: str) -> list[int]:
    """Token ids of the Qwen3-VL chat template for one image + ``prompt`` (one image placeholder token)."""

    def load(path: str, src: Source, local_only: bool):
        from transformers import AutoProcessor

        kwargs = {"subfolder": src.subfolder} if src.subfolder else {}
        return AutoProcessor.from_pretrained(path, local_files_only=local_only, **kwargs)

    def build(config: dict):
        raise ValueError("the VLM processor cannot be built from a config; give `prompt_ids` for tiny VLMs")

    proc = load_or_build("Qwen3-VL processor", processor, load, build, yaml_key="condition.processor.pretrained")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = proc.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(proc.tokenizer(text, add_special_tokens=False)["input_ids"])


class VLMCondition(ConditionEncoder):
    """E_VLM(x_LR) of StrSR eq. 5: frozen Qwen3-VL features at text-token positions, (B, L <= max_tokens, D).

    Args:
        vlm: ``Qwen3VLForConditionalGeneration`` source (``Qwen/Qwen3-VL-4B-Instruct``; a tiny ``config`` for
            tests). Only its ``.model`` (vision tower + language model, no LM head) is kept. ``None``: no VLM is
            loaded and the generator must be given cached features (``feature_dim`` then required).
        processor: the Qwen3-VL processor (usually the same id as ``vlm``), used once for the prompt's token ids.
        prompt: the fixed instruction shown with the image (default: the released code's long prompt,
            ``RELEASED_CODE_PROMPT``; ``SHORT_PROMPT`` is a short one).
        prompt_ids: chat-formatted prompt ids holding exactly one ``image_token_id``; overrides ``processor``.
        max_tokens: truncation length (512 for FLUX as in the released code).
        dtype: VLM weight dtype.
        image_mean: per-channel mean of the image processor's normalisation (Qwen3-VL: 0.5); patch, merge and
            temporal sizes come from the vision config.
        image_std: per-channel standard deviation of that normalisation (Qwen3-VL: 0.5).
        min_pixels: the LR is resized to at least this many pixels before the VLM (Qwen3-VL: 256*256).
        max_pixels: and to at most this many (Qwen3-VL: 4096*4096).
        feature_dim: feature width when ``vlm`` is ``None`` (Qwen3-VL-4B: 2560).
        pre_resize_factor: the released sizing: the LR on 8-bit levels, resized by ``qwen_vl_utils``' rule with
            this factor (28, as the released code calls it) before the processor's own resize (8-bit levels after
            each, as the uint8 images of PIL and the processor). ``None``: the processor's resize alone, on the
            float LR.
    """

    needs_adapter = True

    def __init__(
        self,
        vlm: Source | None,
        processor: Source | None = None,
        prompt: str = DEFAULT_PROMPT,
        prompt_ids: list[int] | None = None,
        max_tokens: int = 512,
        dtype: str = "bf16",
        image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        image_std: tuple[float, float, float] = (0.5, 0.5, 0.5),
        min_pixels: int = 256 * 256,
        max_pixels: int = 4096 * 4096,
        feature_dim: int | None = None,
        pre_resize_factor: int | None = VL_UTILS_FACTOR,
    ) -> None:
        super().__init__()
        self.prompt, self.max_tokens = prompt, max_tokens
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.pre_resize_factor = pre_resize_factor
        self.register_buffer("mean", torch.tensor(image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(image_std).view(1, 3, 1, 1), persistent=False)
        self.vlm = None
        if vlm is None:
            if feature_dim is None:
                raise ValueError("VLMCondition(vlm=None) serves cached features only and needs `feature_dim`")
            self._feature_dim = int(feature_dim)
            self.prompt_ids: list[int] = list(prompt_ids or [])
            return
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

        full = from_hf("Qwen3-VL", Qwen3VLForConditionalGeneration, vlm, config_cls=Qwen3VLConfig,
                       dtype=resolve_dtype(dtype), yaml_key="condition.vlm.pretrained")
        cfg = full.config
        self.vlm = freeze(full.model)  # Qwen3VLModel: vision tower + language model, LM head dropped
        del full
        self.image_token_id = int(cfg.image_token_id)
        vc = cfg.vision_config
        self.patch, self.merge, self.temporal = int(vc.patch_size), int(vc.spatial_merge_size), int(vc.temporal_patch_size)
        self._feature_dim = int(cfg.text_config.hidden_size)
        if prompt_ids is None:
            if processor is None:
                raise ValueError("VLMCondition needs `processor` (to tokenize the prompt) or explicit `prompt_ids`")
            prompt_ids = _chat_prompt_ids(processor, prompt)
        if list(prompt_ids).count(self.image_token_id) != 1:
            raise ValueError(f"prompt ids must contain exactly one image token ({self.image_token_id}): {prompt_ids}")
        self.prompt_ids = [int(i) for i in prompt_ids]

    @property
    def feature_dim(self) -> int:
        return self._feature_dim

    def preprocess(self, lq: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, h, w) in [0, 1] -> pixel_values (B * gh * gw, 3 * T * P * P), image_grid_thw (B, 3)."""
        b = lq.shape[0]
        factor = self.patch * self.merge
        if self.pre_resize_factor:
            x = released_resize(lq, factor, self.min_pixels, self.max_pixels, pre_factor=self.pre_resize_factor)
        else:
            x = processor_resize(lq, factor, self.min_pixels, self.max_pixels)
        x = (x - self.mean) / self.std
        pixel_values, gh, gw = qwen_vl_patchify(x, self.patch, self.merge, self.temporal)
        grid = torch.tensor([[1, gh, gw]] * b, dtype=torch.long, device=lq.device)
        return pixel_values, grid

    def input_ids(self, n_image_tokens: int, batch_size: int, device: torch.device) -> Tensor:
        """Prompt ids with the image placeholder expanded to ``n_image_tokens`` copies: (B, S)."""
        k = self.prompt_ids.index(self.image_token_id)
        ids = self.prompt_ids[:k] + [self.image_token_id] * n_image_tokens + self.prompt_ids[k + 1:]
        return torch.tensor(ids, dtype=torch.long, device=device).unsqueeze(0).expand(batch_size, -1)

    @torch.no_grad()
    def forward(self, lq: Tensor | None, batch_size: int | None = None) -> Tensor:
        """Raw LR (B, 3, h, w) in [0, 1] -> features (B, L, D) with L = min(#text tokens, max_tokens)."""
        if self.vlm is None:
            raise RuntimeError("VLMCondition was built without a VLM (vlm=None): pass cached features instead")
        if lq is None:
            raise ValueError("VLMCondition needs the raw LR image `lq`")
        dtype = next(self.vlm.parameters()).dtype
        pixel_values, grid = self.preprocess(lq)
        n_img = int(grid[0, 1] * grid[0, 2]) // self.merge**2
        ids = self.input_ids(n_img, lq.shape[0], lq.device)  # (B, S)
        is_image = ids == self.image_token_id  # (B, S), the same row for every sample
        out = self.vlm(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            pixel_values=pixel_values.to(dtype),
            image_grid_thw=grid,
            mm_token_type_ids=is_image.int(),
            use_cache=False,
        )
        hidden = out.last_hidden_state  # (B, S, D), after the final norm
        text = hidden[:, ~is_image[0]]  # (B, S - n_img, D): image tokens dropped
        return text[:, : self.max_tokens]
