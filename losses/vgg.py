"""Frozen torchvision VGG16 / VGG19 feature trunks for the perceptual losses (DISTS, LPIPS, FDL).

Weights come from a :class:`models.pretrained.Source`:

- ``Source(pretrained="/path/vgg16-397923af.pth")``: a local state-dict file of torchvision's ``vgg16`` / ``vgg19``
  (``.pth``/``.pt``/``.bin``/``.safetensors``; keys ``features.N.weight`` as torchvision saves them, or already
  stripped to ``N.weight``; classifier keys are ignored);
- ``Source(config={})``: random initialisation (torchvision's Kaiming init), used by tests and the demo;
- ``Source(config={"width": 0.125})``: the same layers with every convolution's channel count scaled (here 8, 16,
  32, 64, 64 per stage instead of 64, 128, 256, 512, 512) and random weights: a narrow trunk that makes the
  perceptual losses cheap in tests and tiny runs. Module names (torchvision indices) stay; only ``width`` 1 (the
  default) is the real architecture, and only it loads weight files.

Only the convolutional ``features`` are built (the 120 M-parameter classifier never is).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from models.pretrained import Source, WeightArg, freeze, load_or_build, load_state_dict_file, missing_weights

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageNetNormalize",
    "FrozenLoss",
    "build_vgg_features",
    "split_stages",
    "stage_channels",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_CFG_NAME = {"vgg16": "D", "vgg19": "E"}

#: The ImageNet weights of torchvision's VGG16 / VGG19 (declared by the losses that take a ``vgg`` source).
VGG16_WEIGHTS = WeightArg("VGG16 ImageNet weights (torchvision)",
                          how="curl -L --create-dirs -o {path} https://download.pytorch.org/models/vgg16-397923af.pth")
VGG19_WEIGHTS = WeightArg("VGG19 ImageNet weights (torchvision)",
                          how="curl -L --create-dirs -o {path} https://download.pytorch.org/models/vgg19-dcbb9e9d.pth")


class FrozenLoss(nn.Module):
    """Base of the network-backed losses: frozen, always in eval mode (``train()`` is a no-op)."""

    def train(self, mode: bool = True) -> "FrozenLoss":  # noqa: ARG002 - always eval
        return super().train(False)


class ImageNetNormalize(nn.Module):
    """``(x - mean) / std`` with the ImageNet statistics, for ``[0, 1]`` RGB input."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, 3, H, W)
        return (x - self.mean) / self.std


def _make_features(arch: str, init: bool = True, width: float = 1.0) -> nn.Sequential:
    from torchvision.models.vgg import cfgs, make_layers

    cfg = [v if v == "M" else max(1, round(v * width)) for v in cfgs[_CFG_NAME[arch]]]  # width 1: torchvision's
    if not init:  # weights come from a file: build on the meta device, the caller loads with assign=True
        with torch.device("meta"):
            return make_layers(cfg, batch_norm=False)
    features = make_layers(cfg, batch_norm=False)
    for m in features.modules():  # the init torchvision's VGG applies
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return features


def _features_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Keep the ``features.*`` entries of a torchvision VGG state dict (prefix stripped)."""
    if any(k.startswith("features.") for k in state):
        return {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    return {k: v for k, v in state.items() if not k.startswith("classifier.")}


def build_vgg_features(
    source: Source,
    arch: Literal["vgg16", "vgg19"] = "vgg16",
    component: str | None = None,
    yaml_key: str | None = None,
) -> nn.Sequential:
    """Build the frozen ``features`` trunk of torchvision's ``vgg16``/``vgg19`` (indices as in torchvision).

    Args:
        source: local state-dict file (``pretrained``), or ``config={}`` for random init (``config={"width": w}``:
            every convolution ``w`` times as wide, random init only; see the module docstring).
        arch: ``"vgg16"`` or ``"vgg19"``.
        component: name used in the :class:`MissingWeightsError` message, e.g. ``"VGG16 (DISTS)"``.
    """
    if arch not in _CFG_NAME:
        raise ValueError(f"unknown VGG architecture '{arch}'; expected one of {sorted(_CFG_NAME)}")
    name = component or arch.upper()

    def build(config: dict) -> nn.Sequential:
        unknown = sorted(set(config) - {"width"})
        if unknown:
            raise ValueError(f"{name}: the VGG config takes only 'width' (config: {{}} is the real architecture), "
                             f"got {unknown}")
        width = float(config.get("width", 1.0))
        if not 0 < width <= 1:
            raise ValueError(f"{name}: VGG width must be in (0, 1], got {width}")
        return _make_features(arch, width=width)

    def load(path: str, src: Source, local_only: bool) -> nn.Sequential:  # noqa: ARG001
        if not Path(path).is_file():
            raise missing_weights(
                name, src, f"expected a local state-dict file of torchvision's {arch} (.pth or .safetensors)", yaml_key
            )
        state = _features_state(load_state_dict_file(name, path))
        features = _make_features(arch, init=False)
        missing, unexpected = features.load_state_dict(state, strict=False, assign=True)
        if missing or unexpected:
            raise ValueError(f"not a torchvision {arch} state dict (missing {missing[:3]}, unexpected {unexpected[:3]})")
        return features.float()

    return freeze(load_or_build(name, source, load, build, yaml_key))


def stage_channels(features: nn.Sequential, num_stages: int = 5) -> tuple[int, ...]:
    """Output channels of the first ``num_stages`` stages of a VGG trunk (the last convolution before each of its
    max-pools): VGG16/19 ``(64, 128, 256, 512, 512)``, narrower for a ``width`` < 1 trunk."""
    channels, out = 3, []
    for layer in features:
        if isinstance(layer, nn.Conv2d):
            channels = layer.out_channels
        elif isinstance(layer, nn.MaxPool2d):
            out.append(channels)
    if len(out) < num_stages:
        raise ValueError(f"the trunk has fewer than {num_stages} stages")
    return tuple(out[:num_stages])


def split_stages(
    features: nn.Sequential, num_stages: int = 5, pool: Callable[[int], nn.Module] | None = None
) -> nn.ModuleList:
    """Cut a VGG ``features`` trunk at its max-pools into ``num_stages`` stages.

    Stage 1 runs up to the ReLU before the first pool (relu1_2); stage k > 1 starts with the (k-1)-th pool and ends
    at the ReLU before the k-th pool (VGG16: relu2_2, relu3_3, relu4_3, relu5_3; VGG19: relu2_2, relu3_4,
    relu4_4, relu5_4). With ``pool`` given, each max-pool is replaced by ``pool(channels)``. Module names keep the
    torchvision indices.
    """
    stages = nn.ModuleList([nn.Sequential()])
    channels = 3
    for index, layer in enumerate(features):
        if isinstance(layer, nn.MaxPool2d):
            if len(stages) == num_stages:
                break
            stages.append(nn.Sequential())
            layer = pool(channels) if pool is not None else layer
        elif isinstance(layer, nn.Conv2d):
            channels = layer.out_channels
        stages[-1].add_module(str(index), layer)
    if len(stages) != num_stages:
        raise ValueError(f"the trunk has fewer than {num_stages} stages")
    return stages
