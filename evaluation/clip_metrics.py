"""pyiqa's CLIP-based no-reference metrics: CLIPIQA+ (TUDSR Tables 1/2), LIQE (TUDSR Tables 1/2) and QualiCLIP
(StrSR Tables 1/2), run by pyiqa's own classes on local files (optional ``iqa`` extra).

These architectures import OpenAI's ``clip`` package (``pip install openai-clip``; it needs ``pkg_resources``, i.e.
setuptools < 81) for its tokenizer; without it the metrics are reported as unavailable. pyiqa's CLIP loader and
download helpers are pointed at the resolved local files (:func:`evaluation.pyiqa_backend.offline`). ``random_init``
builds the same classes around a small CLIP (``config``: pyiqa ``clip_model.CLIP`` arguments) for tests.
"""

from __future__ import annotations

import tempfile
from typing import Any

import torch
from torch import Tensor

from evaluation.no_reference import clip_rn50_weight, clip_state
from evaluation.pyiqa_backend import PyIQAMetric, offline, pyiqa_module, pyiqa_weight, seeded

__all__ = ["CLIPIQAPlus", "LIQE", "QualiCLIP", "TINY_PYIQA_CLIP_RN", "TINY_PYIQA_CLIP_VIT"]

# Small CLIPs of the classes pyiqa builds: a modified ResNet (CLIPIQA+, QualiCLIP use RN50) and a ViT at 224 px
# (LIQE uses ViT-B/32 on 224x224 patches). The full tokenizer vocabulary, since real prompts are tokenised.
TINY_PYIQA_CLIP_RN: dict[str, Any] = dict(embed_dim=32, image_resolution=64, vision_layers=(1, 1, 1, 1),
                                          vision_width=8, vision_patch_size=None, context_length=77,
                                          vocab_size=49408, transformer_width=64, transformer_heads=1,
                                          transformer_layers=1)
TINY_PYIQA_CLIP_VIT: dict[str, Any] = dict(embed_dim=32, image_resolution=224, vision_layers=1, vision_width=64,
                                           vision_patch_size=32, context_length=77, vocab_size=49408,
                                           transformer_width=64, transformer_heads=1, transformer_layers=1)


def _tiny_clip(metric: str, config: dict[str, Any]) -> torch.nn.Module:
    """pyiqa's CLIP class with random weights (fixed seed), fp32, eval."""
    clip_model = pyiqa_module(metric, "clip_model")
    with seeded():
        return clip_model.CLIP(**config).float().eval()


def _read_checkpoint(path: str) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - pyiqa's own files are full pickles; the user chose this local file
        state = torch.load(path, map_location="cpu", weights_only=False)
    return state.get("params", state)


def _clip_from_checkpoint(metric: str, path: str) -> torch.nn.Module:
    """The CLIP architecture stored under ``clip_model.*`` in a LIQE / QualiCLIP checkpoint (built by pyiqa's
    ``build_model``; its weights are then loaded from the same file by pyiqa)."""
    clip_model = pyiqa_module(metric, "clip_model")
    state = {k.removeprefix("module.").removeprefix("clip_model."): v for k, v in _read_checkpoint(path).items()
             if k.removeprefix("module.").startswith("clip_model.")}
    if not state:
        raise ValueError(f"{metric}: '{path}' holds no clip_model.* weights")
    return clip_model.build_model(state).float().eval()


class CLIPIQAPlus(PyIQAMetric):
    """CLIP-IQA+ (Wang et al., AAAI 2023, sec. 3.2), pyiqa ``clipiqa+``: CLIP RN50 (OpenAI ``RN50.pt``, key
    ``clipiqa``) with the learned context of the prompt pair ("Good photo.", "Bad photo.") from
    ``CLIP-IQA+_learned_prompts-603f3273.pth`` (key ``clipiqa+``); the softmax probability of "good", in [0, 1],
    higher is better."""

    name = "clipiqa+"
    FILE = "CLIP-IQA+_learned_prompts-603f3273.pth"

    def __init__(self, weights: dict[str, str] | None = None, random_init: bool = False,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__()
        arch = pyiqa_module(self.name, "clipiqa_arch")
        files: dict[str, str] = {}
        if random_init:
            clip = _tiny_clip(self.name, config or TINY_PYIQA_CLIP_RN)
        else:
            # pyiqa's ``load`` for a local RN50.pt: build_model on the archive's state dict, fp32 on the CPU
            state = clip_state(clip_rn50_weight(self.name, weights))
            clip = pyiqa_module(self.name, "clip_model").build_model(state).float().eval()
            files[self.FILE] = pyiqa_weight(self.name, weights, "clipiqa+", self.FILE)
        with seeded(), offline(arch, files, load=lambda *_, **__: clip):
            self.net = arch.CLIPIQA(model_type="clipiqa+", backbone="RN50", pretrained=not random_init)
        self.clip = clip  # pyiqa keeps it in a list (unregistered); registered here it follows .to(device)
        self.freeze()


class LIQE(PyIQAMetric):
    """LIQE (Zhang et al., CVPR 2023), pyiqa ``liqe``: CLIP ViT-B/32 fine-tuned on KonIQ (``liqe_koniq.pt``, which
    holds the whole CLIP), 15 of the 224x224 patches at stride 32 (needs images of at least 224 px), softmax over
    "a photo with {bad, poor, fair, good, perfect} quality", score ``sum_k k p_k`` in [1, 5], higher is better.

    pyiqa caches the prompt features in ``$TORCH_HOME/hub/pyiqa/liqe_text_feat.pt`` and reuses that file for any
    checkpoint; here they are always computed from the loaded model."""

    name = "liqe"
    FILE = "liqe_koniq.pt"

    def __init__(self, weights: dict[str, str] | None = None, random_init: bool = False,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__()
        arch = pyiqa_module(self.name, "liqe_arch")
        files: dict[str, str] = {}
        if random_init:
            clip = _tiny_clip(self.name, config or TINY_PYIQA_CLIP_VIT)
        else:
            files[self.FILE] = pyiqa_weight(self.name, weights, "liqe", self.FILE)
            clip = _clip_from_checkpoint(self.name, files[self.FILE])
        with tempfile.TemporaryDirectory() as cache, \
                offline(arch, files, load=lambda *_, **__: clip, DEFAULT_CACHE_DIR=cache):
            self.net = arch.LIQE(pretrained=not random_init)
        self.freeze()

    def score(self, sr: Tensor) -> Tensor:
        if min(sr.shape[-2:]) < 224:
            raise ValueError(f"liqe needs images of at least 224x224 pixels, got {tuple(sr.shape[-2:])}")
        return self.net(sr)


class QualiCLIP(PyIQAMetric):
    """QualiCLIP (Agnolucci et al., 2024), pyiqa ``qualiclip``: CLIP RN50 fine-tuned for quality, with the
    pre-computed features of seven antonym prompt pairs, both in ``QualiCLIP.pth``; per pair the softmax of the
    logits / 2 over (positive, negative), averaged; in [0, 1], higher is better. ``random_init`` writes a small
    CLIP and random prompt features into a file of the same layout and loads it the same way."""

    name = "qualiclip"
    FILE = "QualiCLIP.pth"

    def __init__(self, weights: dict[str, str] | None = None, random_init: bool = False,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__()
        arch = pyiqa_module(self.name, "qualiclip_arch")
        with tempfile.TemporaryDirectory() as tmp:
            if random_init:
                path = f"{tmp}/{self.FILE}"
                tiny = _tiny_clip(self.name, config or TINY_PYIQA_CLIP_RN)
                with seeded(1):
                    prompts = torch.nn.functional.normalize(torch.randn(14, tiny.text_projection.shape[1]), dim=-1)
                torch.save({**{f"clip_model.{k}": v for k, v in tiny.state_dict().items()},
                            "prompts_features": prompts}, path)
            else:
                path = pyiqa_weight(self.name, weights, "qualiclip", self.FILE)
            clip = _clip_from_checkpoint(self.name, path)
            with offline(arch, {self.FILE: path}, load=lambda *_, **__: clip):
                self.net = arch.QualiCLIP(model_type="qualiclip", backbone="RN50", pretrained=True)
        self.clip = clip
        self.freeze()
