"""DISTS (Ding et al., TPAMI 2020), the perceptual term of TUDSR's EA-DISTS (paper eq. 5)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.pretrained import MissingWeightsError, Source, WeightArg, declare_weights, freeze, load_state_dict_file
from losses.vgg import (VGG16_WEIGHTS, FrozenLoss, ImageNetNormalize, build_vgg_features, split_stages,
                        stage_channels)

__all__ = ["DISTS", "L2Pool", "DISTS_CHANNELS", "load_alpha_beta", "random_alpha_beta"]

DISTS_CHANNELS = (3, 64, 128, 256, 512, 512)  # raw image, relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (1475)
_C1 = 1e-6
_C2 = 1e-6


class L2Pool(nn.Module):
    """DISTS L2 pooling: ``sqrt(hann * x^2 + 1e-12)`` with the 3x3 Hann window [[1,2,1],[2,4,2],[1,2,1]]/16,
    depthwise, stride 2, zero padding 1 (the official ``L2pooling(filter_size=5)``: ``hanning(5)[1:-1]``)."""

    def __init__(self) -> None:
        super().__init__()
        row = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(row, row)
        self.register_buffer("kernel", kernel / kernel.sum(), persistent=False)  # (3, 3), a constant

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))
        c = x.shape[1]
        weight = self.kernel.to(x.dtype).expand(c, 1, 3, 3)
        return (F.conv2d(x * x, weight, stride=2, padding=1, groups=c) + 1e-12).sqrt()


def random_alpha_beta(seed: int = 0, channels: tuple[int, ...] = DISTS_CHANNELS) -> tuple[Tensor, Tensor]:
    """The official initialisation before training: alpha, beta ~ N(0.1, 0.01) per channel, here drawn from a
    fixed ``seed`` so random-init runs are reproducible. (Normalised by their total in the forward pass.)
    ``channels``: the feature widths (image, then the five stages; narrower for a narrow test trunk)."""
    g = torch.Generator().manual_seed(seed)
    n = sum(channels)
    alpha = 0.1 + 0.01 * torch.randn(1, n, 1, 1, generator=g)
    beta = 0.1 + 0.01 * torch.randn(1, n, 1, 1, generator=g)
    return alpha, beta


def _find(state: dict, name: str) -> Tensor | None:
    for key, value in state.items():
        if isinstance(value, Tensor) and (key == name or key.endswith("." + name)):
            return value
    return None


def load_alpha_beta(path: str) -> tuple[Tensor, Tensor]:
    """Read the learned DISTS weights: the official ``weights.pt`` (``{'alpha', 'beta'}``) or pyiqa's
    ``DISTS_weights-f5e65c96.pth`` (same keys, possibly under ``params``/``state_dict``). Each (1, 1475, 1, 1)."""
    component = "DISTS alpha/beta weights"
    state = load_state_dict_file(component, path)
    for wrapper in ("params", "params_ema", "model"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    alpha, beta = _find(state, "alpha"), _find(state, "beta")
    n = sum(DISTS_CHANNELS)
    if alpha is None or beta is None or alpha.numel() != n or beta.numel() != n:
        raise MissingWeightsError(
            f"Missing weights for {component}: '{path}' holds no 'alpha'/'beta' tensors of {n} values "
            f"(keys: {sorted(state)[:6]}). Use the official DISTS weights.pt or pyiqa's DISTS_weights-f5e65c96.pth."
        )
    return alpha.detach().float().reshape(1, n, 1, 1), beta.detach().float().reshape(1, n, 1, 1)


@declare_weights(vgg=VGG16_WEIGHTS, alpha_beta=WeightArg(
    "DISTS alpha/beta", file=True,
    how="curl -L --create-dirs -o {path} "
        "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/DISTS_weights-f5e65c96.pth"))
class DISTS(FrozenLoss):
    """Deep Image Structure and Texture Similarity, as the official ``DISTS_pytorch`` computes it.

    VGG16 with every max-pool replaced by :class:`L2Pool`; features ``[x, relu1_2, relu2_2, relu3_3, relu4_3,
    relu5_3]`` (the raw [0, 1] image, then the trunk on ImageNet-normalised input). Per channel, with population
    statistics over space and c1 = c2 = 1e-6::

        l = (2 mx my + c1) / (mx^2 + my^2 + c1),   s = (2 sxy + c2) / (sx^2 + sy^2 + c2)
        D = 1 - sum_k (alpha_k l_k + beta_k s_k) / (sum(alpha) + sum(beta))

    ``sxy`` is computed as ``mean((x - mx)(y - my))`` (the same quantity as the official ``mean(xy) - mx my``,
    numerically exact for x = y). alpha/beta are frozen buffers from the official file, or, when ``alpha_beta``
    is None, the official random init N(0.1, 0.01) (seed 0; for tests and smoke runs only). Computed in fp32 with
    autocast disabled; gradients flow to ``x`` (and ``y``).

    Args:
        vgg: VGG16 source (torchvision ``vgg16`` state-dict file, or ``config={}``; ``config={"width": w}`` for a
            narrow random trunk, tests only: alpha/beta then have one value per narrow channel).
        alpha_beta: path of the DISTS alpha/beta file, or None for the random init.
    """

    def __init__(self, vgg: Source, alpha_beta: str | None = None) -> None:
        super().__init__()
        features = build_vgg_features(vgg, "vgg16", component="VGG16 (DISTS)")
        self.normalize = ImageNetNormalize()
        self.channels = (3, *stage_channels(features, 5))  # DISTS_CHANNELS for the real trunk
        self.stages = split_stages(features, 5, pool=lambda _c: L2Pool())
        if alpha_beta is not None and self.channels != DISTS_CHANNELS:
            raise ValueError(f"the DISTS alpha/beta file fits the real VGG16 trunk, not one of widths {self.channels}")
        alpha, beta = load_alpha_beta(alpha_beta) if alpha_beta is not None else random_alpha_beta(0, self.channels)
        self.register_buffer("alpha", alpha)  # (1, 1475, 1, 1)
        self.register_buffer("beta", beta)  # (1, 1475, 1, 1)
        freeze(self)

    def features(self, x: Tensor) -> list[Tensor]:
        """``[x (B,3,H,W), relu1_2 (B,64,H,W), relu2_2 (B,128,H/2,W/2), ..., relu5_3 (B,512,H/16,W/16)]``."""
        feats = [x]
        h = self.normalize(x)
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats

    def distance(self, feats_x: list[Tensor], feats_y: list[Tensor]) -> Tensor:
        """DISTS from precomputed feature lists; returns (B,)."""
        w_sum = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / w_sum, list(self.channels), dim=1)
        betas = torch.split(self.beta / w_sum, list(self.channels), dim=1)
        similarity = 0.0
        for fx, fy, a, b in zip(feats_x, feats_y, alphas, betas, strict=True):
            mx = fx.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
            my = fy.mean(dim=(2, 3), keepdim=True)
            dx, dy = fx - mx, fy - my
            vx = (dx * dx).mean(dim=(2, 3), keepdim=True)
            vy = (dy * dy).mean(dim=(2, 3), keepdim=True)
            cov = (dx * dy).mean(dim=(2, 3), keepdim=True)
            l = (2 * mx * my + _C1) / (mx * mx + my * my + _C1)
            s = (2 * cov + _C2) / (vx + vy + _C2)
            similarity = similarity + (a * l + b * s).sum(dim=(1, 2, 3))  # (B,)
        return 1 - similarity

    def forward(self, x: Tensor, y: Tensor, reduction: Literal["mean", "none"] = "mean") -> Tensor:
        """x, y: (B, 3, H, W) in [0, 1]. Returns a scalar (``mean``) or (B,) (``none``)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            score = self.distance(self.features(x.float()), self.features(y.float()))  # (B,)
        return score.mean() if reduction == "mean" else score
