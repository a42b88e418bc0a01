"""LPIPS-VGG (Zhang et al., CVPR 2018), StrSR's perceptual term (reference section 4), via the ``lpips`` package."""

from __future__ import annotations

import os
import warnings
from typing import Literal

import torch
from torch import Tensor

from models.pretrained import MissingWeightsError, Source, freeze
from losses.vgg import FrozenLoss, build_vgg_features

__all__ = ["LPIPS"]


class LPIPS(FrozenLoss):
    """LPIPS v0.1 with the VGG16 trunk: ``sum_l mean_hw || w_l * (phi_l(x) - phi_l(y)) ||^2`` on unit-normalised
    relu1_2 ... relu5_3 features (Zhang et al. eq. 1).

    The ``lpips`` package is built with ``pnet_rand=True`` so torchvision never downloads anything; the trunk is
    then filled from ``vgg`` (a local torchvision ``vgg16`` state-dict file, or ``config={}`` for our random
    init), or left at lpips' own random init when ``vgg`` is None (tests). The 7 KB linear layers ship inside the
    package (``lpips/weights/v0.1/vgg.pth``; ``lin_path`` overrides). Inputs in [0, 1] are mapped to [-1, 1]
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
        # fail fast on a missing VGG file, before lpips builds its (random) torchvision trunk
        features = build_vgg_features(vgg, "vgg16", component="VGG16 (LPIPS)") if vgg is not None else None
        with warnings.catch_warnings():  # torchvision's deprecated `pretrained=False` inside lpips
            warnings.simplefilter("ignore")
            self.net = lpips.LPIPS(net="vgg", version="0.1", pnet_rand=True, model_path=lin_path, verbose=False)
        if features is not None:
            for piece in (self.net.net.slice1, self.net.net.slice2, self.net.net.slice3, self.net.net.slice4,
                          self.net.net.slice5):
                for name, layer in piece.named_children():  # names are the torchvision feature indices
                    layer.load_state_dict(features[int(name)].state_dict())
        freeze(self)

    def forward(self, x: Tensor, y: Tensor, reduction: Literal["mean", "none"] = "mean") -> Tensor:
        """x, y: (B, 3, H, W) in [0, 1]. Returns a scalar (``mean``) or (B,) (``none``)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            score = self.net(x.float(), y.float(), normalize=True).flatten()  # (B,)
        return score.mean() if reduction == "mean" else score
