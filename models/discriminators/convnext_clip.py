"""Frozen CLIP-ConvNeXt feature pyramid for the StrSR discriminator (paper 3.3; jkwang28/StrSR ``HYPIR/model/D.py``).

The backbone is timm's ``convnext_xxlarge.clip_laion2b_soup`` (the LAION-2B CLIP image tower: stem stride 4, stages
of 384/768/1536/3072 channels at stride 4/8/16/32, head = avg-pool -> LayerNorm -> Linear(3072, 1024)). Tests and the
demo build the same timm ``ConvNeXt`` class (same head layout) from a tiny config with random weights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.pretrained import Source, freeze, load_or_build, resolve_dtype

__all__ = ["CLIPConvNeXtFeatures", "CLIP_MEAN", "CLIP_STD", "CONVNEXT_COMPONENT", "WEIGHT_FILES"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CONVNEXT_COMPONENT = "CLIP-ConvNeXt-XXLarge (discriminator backbone)"
# Looked for, in order, in a local directory or a hub repository (timm format first, then open_clip format;
# timm's ConvNeXt checkpoint filter converts open_clip ``visual.trunk.*`` / ``visual.head.proj`` keys).
WEIGHT_FILES = ("model.safetensors", "open_clip_model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin")


def _resolve_weight_file(path: str, source: Source, local_only: bool) -> str:
    """A weight file from a local file, a local directory, or a hub repository (hub cache only when offline)."""
    p = Path(os.path.expanduser(path))
    if p.is_file():
        return str(p)
    if p.is_dir():
        for name in WEIGHT_FILES:
            if (p / name).is_file():
                return str(p / name)
        raise FileNotFoundError(f"no weight file ({', '.join(WEIGHT_FILES)}) in directory '{p}'")
    from huggingface_hub import hf_hub_download

    errors = []
    for name in WEIGHT_FILES:
        try:
            return hf_hub_download(path, name, revision=source.revision, local_files_only=local_only)
        except Exception as err:  # noqa: BLE001 - every failure means "not here"; summarised below
            errors.append(f"{name}: {type(err).__name__}")
    raise FileNotFoundError(f"none of the weight files found in hub repo '{path}' ({'; '.join(errors)})")


def _hub_model_args(weight_file: str) -> dict[str, Any]:
    """The ``model_args`` of a timm hub ``config.json`` beside the weight file, as timm's own ``hf-hub:`` loader
    reads them (``timm.models.load_model_config_from_hf``); ``{}`` when there are none (the released repository's
    config names only the architecture)."""
    config = Path(weight_file).with_name("config.json")
    try:
        args = json.loads(config.read_text()).get("model_args") if config.is_file() else None
    except (ValueError, AttributeError):  # not a timm config: the architecture stays model_name's
        args = None
    return dict(args) if isinstance(args, dict) else {}


class CLIPConvNeXtFeatures(nn.Module):
    """Stage maps + pooled CLIP embedding: (B, 3, H, W) in [0, 1] -> [(B, C_s, H/r_s, W/r_s) ...] (+ [(B, D)]).

    Stages are indexed **explicitly**: stage 0 is the first stage after the stem (``model.stages[0]``, stride 4),
    stage 1 stride 8, stage 2 stride 16, stage 3 stride 32; the stem is never counted. The stem and stages run
    by hand (no reliance on timm's ``feature_info``/``out_indices`` conventions). With ``pooled=True`` the last
    level is the model's head output (``forward_head(norm_pre(stage 3))``): the 1024-d CLIP image embedding for the
    real model, kind ``"vector"``. Without it, only stages up to ``max(stages)`` are run.

    Input: CLIP mean/std on [0, 1] pixels, native resolution (StrSR uses 1024x1024); sides that are not multiples of
    32 are floored by the strided convolutions. Frozen and always in eval mode (also after ``.train()``);
    gradients reach the input image, never the weights.

    Args:
        source: ``Source(pretrained=<local file | local dir | hub repo id>)`` or ``Source(config={...})`` with
            timm ConvNeXt kwargs (e.g. ``depths``, ``dims``, ``num_classes``) to build ``model_name`` randomly.
        stages: stage indices in 0..3 (see above).
        pooled: append the pooled CLIP embedding as a ``"vector"`` level.
        model_name: timm architecture (and pretrained config) name.
        dtype: backbone weight dtype (``"fp32"``, ``"bf16"``, ...).
        grad_checkpointing: timm gradient checkpointing of the stages (saves activation memory at 1024 px).
    """

    kinds: list[str]
    out_channels: list[int]

    def __init__(
        self,
        source: Source,
        stages: Sequence[int] = (0, 1, 2),
        pooled: bool = True,
        model_name: str = "convnext_xxlarge.clip_laion2b_soup",
        dtype: str | None = None,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        import timm

        def load(path: str, src: Source, local_only: bool) -> nn.Module:
            weight_file = _resolve_weight_file(path, src, local_only)
            return timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=dict(file=weight_file),
                                     **_hub_model_args(weight_file))

        def build(config: dict[str, Any]) -> nn.Module:
            return timm.create_model(model_name, pretrained=False, **config)

        model = load_or_build(
            CONVNEXT_COMPONENT, source, load, build, yaml_key="<discriminator>.init_args.backbone.pretrained"
        )
        self.model = freeze(model.to(resolve_dtype(dtype)))
        if grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        self.stages = tuple(int(s) for s in stages)
        self.pooled = bool(pooled)
        num_stages = len(self.model.stages)
        bad = [s for s in self.stages if not 0 <= s < num_stages]
        if bad:
            raise ValueError(f"ConvNeXt stages are 0-based after the stem, in 0..{num_stages - 1}; got {bad}")
        if not self.stages and not self.pooled:
            raise ValueError("CLIPConvNeXtFeatures needs at least one stage or pooled=True")
        # timm appends one feature_info entry per stage, in order: entry i describes model.stages[i].
        self.out_channels = [int(self.model.feature_info[s]["num_chs"]) for s in self.stages]
        self.kinds = ["map"] * len(self.stages)
        if self.pooled:
            self.out_channels.append(int(self.model.num_classes))
            self.kinds.append("vector")
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> CLIPConvNeXtFeatures:
        """Always eval: the backbone is frozen."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # x: (B, 3, H, W) in [0, 1] -> [(B, C_s, H/r_s, W/r_s) for s in stages] (+ [(B, D)] when pooled)
        dtype = self.model.stem[0].weight.dtype
        h = self.model.stem(((x - self.mean) / self.std).to(dtype))  # (B, C_0, H/4, W/4)
        last = len(self.model.stages) - 1 if self.pooled else max(self.stages)
        wanted = set(self.stages)
        taps: dict[int, torch.Tensor] = {}
        for index in range(last + 1):
            h = self.model.stages[index](h)  # (B, C_i, H/2^(i+2), W/2^(i+2))
            if index in wanted:
                taps[index] = h
        feats = [taps[s] for s in self.stages]
        if self.pooled:
            feats.append(self.model.forward_head(self.model.norm_pre(h)))  # (B, D)
        return feats
