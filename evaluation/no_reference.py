"""No-reference metrics: CLIPIQA (our code on piq's CLIP), and MUSIQ, MANIQA, NIMA from pyiqa (optional extra).
NIQE is in ``niqe.py``, the pyiqa CLIP-based metrics (CLIPIQA+, LIQE, QualiCLIP) in ``clip_metrics.py``, QAlign in
``qalign.py``.

The papers computed these with pyiqa (StrSR sec. 4.1: "All the metrics are evaluated by pyiqa"), so the defaults
are pyiqa's: ``clipiqa`` = CLIP RN50 without positional embedding and pyiqa's five antonym prompt pairs, ``musiq``
= the KonIQ-10k checkpoint, ``maniqa`` = the KonIQ-10k checkpoint (20 uniform 224 crops), ``nima`` = the AVA
InceptionResNetV2 checkpoint. Weights are local files (``weights.<name>``, else pyiqa's cache
``$TORCH_HOME/hub/pyiqa/``); nothing is downloaded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from unittest import mock

import torch
from torch import Tensor

from evaluation.metrics import Metric, resolve_weight, torch_home
from evaluation.pyiqa_backend import PyIQAMetric, load_pyiqa_state, pyiqa_module, pyiqa_weight, seeded

__all__ = ["CLIPIQA", "MUSIQ", "MANIQA", "NIMA", "CLIPIQA_PROMPTS", "TINY_CLIP", "clip_prompt_tokens", "clip_rn50_weight", "clip_state"]

# pyiqa's ensemble of antonym pairs for ``clipiqa`` (archs/clipiqa_arch.py), with their CLIP BPE ids (no SOT/EOT),
# computed once with OpenAI's tokenizer (``clip.tokenize``); tests re-check them when a CLIP tokenizer is installed.
CLIPIQA_PROMPTS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("Good image", (886, 2867)), ("bad image", (2103, 2867)),
    ("Sharp image", (8157, 2867)), ("blurry image", (21977, 2867)),
    ("sharp edges", (8157, 20938)), ("blurry edges", (21977, 20938)),
    ("High resolution image", (1400, 9977, 2867)), ("low resolution image", (1042, 9977, 2867)),
    ("Noise-free image", (9307, 268, 1139, 2867)), ("noisy image", (33495, 2867)),
)
_SOT, _EOT = 49406, 49407
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# A small CLIP (RN + text transformer) for random-init runs: same classes as RN50, a fraction of the width.
TINY_CLIP: dict[str, Any] = dict(embed_dim=32, image_resolution=64, vision_layers=(1, 1, 1, 1), vision_width=8,
                                 vision_patch_size=None, context_length=77, vocab_size=49408, transformer_width=64,
                                 transformer_heads=1, transformer_layers=1)


def clip_prompt_tokens(context_length: int = 77) -> Tensor:
    """The prompt pairs as CLIP token ids, ``[SOT, ..., EOT, 0...]``. -> (10, context_length) int64."""
    tokens = torch.zeros(len(CLIPIQA_PROMPTS), context_length, dtype=torch.long)
    for i, (_, ids) in enumerate(CLIPIQA_PROMPTS):
        row = (_SOT, *ids, _EOT)
        tokens[i, : len(row)] = torch.tensor(row)
    return tokens


def clip_rn50_weight(metric: str, weights: dict[str, str] | None) -> str:
    """OpenAI's CLIP RN50 (``RN50.pt``): ``weights.clipiqa``, else the CLIP caches of pyiqa and of OpenAI's package."""
    return resolve_weight(
        metric, weights, ("clipiqa",), [torch_home() / "clip" / "RN50.pt", "~/.cache/clip/RN50.pt"],
        "OpenAI CLIP (openaipublic.azureedge.net/clip/models/"
        "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt)")


def clip_state(path: str) -> dict[str, Tensor]:
    """OpenAI's ``RN50.pt`` (a TorchScript archive) or a plain state dict."""
    try:
        return torch.jit.load(path, map_location="cpu").state_dict()
    except RuntimeError:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state.get("state_dict", state)


class CLIPIQA(Metric):
    """CLIP-IQA (Wang et al., AAAI 2023, sec. 3.1) as pyiqa's ``clipiqa``: for each antonym pair, the softmax of
    ``100 cos(f_img, f_text)`` over (positive, negative), averaged over the pairs; in [0, 1], higher is better.

    CLIP RN50 from OpenAI's ``RN50.pt`` (``weights.clipiqa``; default ``$TORCH_HOME/hub/clip/RN50.pt`` or
    ``~/.cache/clip/RN50.pt``), run at native resolution without the attention-pool positional embedding. The
    architecture is piq's copy of OpenAI's CLIP; ``random_init=True`` builds it with ``clip_config`` (default
    :data:`TINY_CLIP`).
    """

    name = "clipiqa"

    def __init__(self, weights: dict[str, str] | None = None, random_init: bool = False,
                 clip_config: dict[str, Any] | None = None) -> None:
        super().__init__()
        from piq.feature_extractors.clip import CLIP, build_model

        if random_init:
            with seeded():
                clip = CLIP(**(clip_config or TINY_CLIP))
        else:
            clip = build_model(clip_state(clip_rn50_weight("clipiqa", weights)))
        self.clip = clip.float()
        with torch.no_grad():
            text = self.clip.encode_text(clip_prompt_tokens(self.clip.context_length)).float()  # (10, D)
        self.register_buffer("text", text / text.norm(dim=-1, keepdim=True), persistent=False)
        self.register_buffer("mean", torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    @torch.no_grad()
    def update(self, sr: Tensor, gt: Tensor | None = None) -> Tensor:
        self.check_pair(sr, gt)
        image = self.clip.encode_image((sr.float() - self.mean) / self.std, pos_embedding=False).float()  # (B, D)
        image = image / image.norm(dim=-1, keepdim=True)
        logits = self.clip.logit_scale.exp() * image @ self.text.T  # (B, 10)
        probs = logits.reshape(sr.shape[0], -1, 2).softmax(dim=-1)[..., 0]  # (B, 5)
        return probs.mean(dim=1).double().cpu()


@contextlib.contextmanager
def _timm_offline(timm: Any, overrides: dict[str, Any] | None = None) -> Iterator[None]:
    """pyiqa builds its timm backbones with ``pretrained=True`` (a download); the checkpoints hold the backbone
    weights, so build them with ``pretrained=False`` (plus ``overrides``, e.g. a narrower ViT for tests)."""
    create = timm.create_model

    def offline_create(name: str, pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:  # noqa: ARG001
        return create(name, pretrained=False, **{**kwargs, **(overrides or {})})

    with mock.patch.object(timm, "create_model", offline_create):
        yield


class MUSIQ(PyIQAMetric):
    """MUSIQ (Ke et al., ICCV 2021), pyiqa ``musiq``: multi-scale patches (native + longer side 224, 384), KonIQ
    checkpoint ``musiq_koniq_ckpt-e95806b9.pth``; ~0..100, higher is better. ``random_init`` uses ``config``."""

    name = "musiq"

    def __init__(self, weights: dict[str, str] | None = None, random_init: bool = False,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__()
        arch = pyiqa_module("musiq", "musiq_arch")
        if random_init:
            with seeded():
                self.net = arch.MUSIQ(pretrained=False, **(config or {}))
        else:
            path = pyiqa_weight("musiq", weights, "musiq", "musiq_koniq_ckpt-e95806b9.pth")
            self.net = arch.MUSIQ(pretrained=False)
            load_pyiqa_state(self.net, path)
        self.freeze()


class MANIQA(PyIQAMetric):
    """MANIQA (Yang et al., CVPRW 2022), pyiqa ``maniqa``: ViT-B/8 features, transposed attention + Swin blocks,
    KonIQ checkpoint ``ckpt_koniq10k.pt`` (scale 0.8), mean over 20 uniform 224x224 crops; higher is better.

    The checkpoint holds the ViT weights, so the ViT is built without its ImageNet download. ``random_init`` takes
    ``config``: MANIQA arguments plus ``vit`` (timm overrides, e.g. a smaller patch/width for tests).
    """

    name = "maniqa"

    def __init__(self, weights: dict[str, str] | None = None, random_init: bool = False,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__()
        arch = pyiqa_module("maniqa", "maniqa_arch")
        config = dict(config or {})
        vit_overrides = config.pop("vit", {}) if random_init else {}
        path = None
        if not random_init:
            path = pyiqa_weight("maniqa", weights, "maniqa", "ckpt_koniq10k.pt")
            config = {"train_dataset": "koniq", "scale": 0.8}
        with seeded(), _timm_offline(arch.timm, vit_overrides):
            self.net = arch.MANIQA(pretrained=False, **config)
        if path is not None:
            load_pyiqa_state(self.net, path)
        self.freeze()


class NIMA(PyIQAMetric):
    """NIMA (Talebi & Milanfar, TIP 2018), pyiqa ``nima``: InceptionResNetV2 (timm) features, global average pool, a
    10-way softmax over the AVA score bins, reported as the mean score ``sum_k k p_k`` (1..10, higher is better).
    pyiqa resizes the shorter side to 299 (bilinear, antialiased), centre-crops 299 and normalises with mean = std =
    0.5. Checkpoint ``NIMA_InceptionV2_ava-b0c77c00.pth`` (backbone included). ``random_init`` takes ``config``: NIMA
    arguments, e.g. a small timm ``base_model_name`` for tests."""

    name = "nima"

    def __init__(self, weights: dict[str, str] | None = None, random_init: bool = False,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__()
        arch = pyiqa_module("nima", "nima_arch")
        options: dict[str, Any] = {"base_model_name": "inception_resnet_v2", "num_classes": 10}
        path = None
        if random_init:
            options.update(config or {})
        else:
            path = pyiqa_weight("nima", weights, "nima", "NIMA_InceptionV2_ava-b0c77c00.pth")
        with seeded(), _timm_offline(arch.timm):
            self.net = arch.NIMA(pretrained=False, **options)
        if path is not None:
            load_pyiqa_state(self.net, path)
        self.freeze()
