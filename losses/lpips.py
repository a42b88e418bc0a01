"""LPIPS-VGG (Zhang et al., CVPR 2018), StrSR's perceptual term (StrSR eq. 11), via the ``lpips`` package."""

from __future__ import annotations

import os
import warnings
from types import SimpleNamespace
from typing import Literal
from unittest import mock

import torch
from torch import Tensor, nn

from models.pretrained import MissingWeightsError, Source, WeightArg, declare_weights, freeze
from losses.vgg import VGG16_WEIGHTS, FrozenLoss, build_vgg_features, stage_channels

__all__ = ["LPIPS"]


class _Trunk:
    """``torchvision.models`` as lpips sees it, except that ``vgg16`` is the given conv trunk (lpips slices it by
    torchvision index), so torchvision's 120 M-parameter classifier is never built."""

    def __init__(self, features: nn.Sequential) -> None:
        self.features = features

    def __getattr__(self, name: str) -> object:
        import torchvision.models

        return getattr(torchvision.models, name)

    def vgg16(self, **_: object) -> SimpleNamespace:
        return SimpleNamespace(features=self.features)


@declare_weights(vgg=VGG16_WEIGHTS, lin_path=WeightArg("LPIPS linear layers", file=True))
class LPIPS(FrozenLoss):
    """LPIPS v0.1 with the VGG16 trunk: ``sum_l mean_hw || w_l * (phi_l(x) - phi_l(y)) ||^2`` on unit-normalised
    relu1_2 ... relu5_3 features (Zhang et al. eq. 1).

    The ``lpips`` package is built around the trunk of ``vgg`` (a local torchvision ``vgg16`` state-dict file, or
    ``config={}`` for torchvision's random init; None: the same random init), so torchvision never downloads
    anything. The 7 KB linear layers ship inside the package (``lpips/weights/v0.1/vgg.pth``; ``lin_path``
    overrides). A narrow trunk (``config={"width": w}``, tests only) keeps the first channels' linear weights. Inputs in [0, 1] are mapped to [-1, 1]
    (``normalize=True``). Always eval (its Dropout stays off), frozen, fp32 with autocast disabled.

    Args:
        vgg: VGG16 source, or None for a random trunk.
        lin_path: optional path of the linear-layer weights (default: the file shipped with ``lpips``).
    """

    def __init__(self, vgg: Source | None = None, lin_path: str | None = None) -> None:
        super().__init__()
        import lpips

        if lin_path is not None and not os.path.isfile(os.path.expanduser(lin_path)):
            raise MissingWeightsError(f"Missing weights for LPIPS linear layers: no file at '{lin_path}'.")
        lin_path = os.path.expanduser(lin_path) if lin_path is not None else None
        import lpips.pretrained_networks

        features = build_vgg_features(vgg if vgg is not None else Source(config={}), "vgg16",
                                      component="VGG16 (LPIPS)")
        with warnings.catch_warnings(), mock.patch.object(lpips.pretrained_networks, "tv", _Trunk(features)):
            warnings.simplefilter("ignore")
            self.net = lpips.LPIPS(net="vgg", version="0.1", pnet_rand=True, model_path=lin_path, verbose=False)
        # lpips makes its input scaling constants with torch.Tensor([...]), on the CPU whatever the default device:
        # keep them with the trunk (a model built under torch.device("meta") or "cuda")
        self.net.scaling_layer.to(next(features.parameters()).device)
        for lin, channels in zip(self.net.lins, stage_channels(features, 5)):
            conv = lin.model[-1]  # (1, C, 1, 1) 1x1 conv; narrow trunk: its first ``channels`` weights
            if conv.in_channels != channels:
                lin.model[-1] = nn.Conv2d(channels, 1, 1, bias=False)
                lin.model[-1].weight.data.copy_(conv.weight.data[:, :channels])
        freeze(self)

    def forward(self, x: Tensor, y: Tensor, reduction: Literal["mean", "none"] = "mean") -> Tensor:
        """x, y: (B, 3, H, W) in [0, 1]. Returns a scalar (``mean``) or (B,) (``none``)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            score = self.net(x.float(), y.float(), normalize=True).flatten()  # (B,)
        return score.mean() if reduction == "mean" else score
