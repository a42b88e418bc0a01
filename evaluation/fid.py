"""FID (Heusel et al., NeurIPS 2017): pytorch-fid's Inception features of the SR and GT sets, and the exact Frechet
distance of their Gaussians. A set metric: nothing per image, one value per set, gathered across ranks."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from evaluation.metrics import Metric, resolve_weight, torch_home
from models.pretrained import load_state_dict_file

__all__ = ["FID", "FIDInceptionFeatures", "frechet_distance"]


class FIDInceptionFeatures(nn.Module):
    """pytorch-fid's InceptionV3 (the TF FID network, 1008 classes, patched blocks) up to the 2048-d pool3
    features: bilinear resize to ``input_size`` (299; >= 75 for tests only), ``2x - 1``. Weights:
    ``pt_inception-2015-12-05-6726825d.pth``, or random (None)."""

    num_features = 2048

    def __init__(self, weights_path: str | None = None, input_size: int = 299) -> None:
        super().__init__()
        self.input_size = int(input_size)
        from piq.feature_extractors.fid_inception import FIDInceptionA, FIDInceptionC, FIDInceptionE1, FIDInceptionE2
        from torchvision.models import inception_v3

        net = inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
        net.Mixed_5b, net.Mixed_5c = FIDInceptionA(192, 32), FIDInceptionA(256, 64)
        net.Mixed_5d = FIDInceptionA(288, 64)
        net.Mixed_6b, net.Mixed_6c = FIDInceptionC(768, 128), FIDInceptionC(768, 160)
        net.Mixed_6d, net.Mixed_6e = FIDInceptionC(768, 160), FIDInceptionC(768, 192)
        net.Mixed_7b, net.Mixed_7c = FIDInceptionE1(1280), FIDInceptionE2(2048)
        if weights_path is not None:
            net.load_state_dict(load_state_dict_file("FID InceptionV3", weights_path))
        names = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                 "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                 "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"]
        self.blocks = nn.Sequential(*[getattr(net, n) for n in names], nn.AdaptiveAvgPool2d(1))
        self.requires_grad_(False).eval()

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, H, W) in [0, 1] (or uint8) -> (B, 2048)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        x = F.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        return self.blocks(2 * x - 1).flatten(1)


def frechet_distance(real: Tensor, fake: Tensor) -> Tensor:
    """FID between two feature sets (n1, d), (n2, d), in float64 (Heusel et al. 2017, eq. 6)::

        |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2)

    with unbiased covariances. ``tr sqrt(S1 S2)`` is exact either way: for n <= d it is the sum of the singular values
    of ``A B^T / sqrt((n1-1)(n2-1))`` (A, B the centred features; the non-zero eigenvalues of S1 S2 are those of
    (A B^T)(A B^T)^T), else the trace of ``sqrt(S1^1/2 S2 S1^1/2)`` from symmetric eigendecompositions."""
    real, fake = real.double(), fake.double()
    n1, n2, d = real.shape[0], fake.shape[0], real.shape[1]
    if n1 < 2 or n2 < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {n1} reference and {n2} SR images")
    mu1, mu2 = real.mean(0), fake.mean(0)
    a, b = real - mu1, fake - mu2  # (n1, d), (n2, d)
    tr1, tr2 = (a * a).sum() / (n1 - 1), (b * b).sum() / (n2 - 1)
    if min(n1, n2) <= d:
        tr_sqrt = torch.linalg.svdvals(a @ b.T).sum() / math.sqrt((n1 - 1) * (n2 - 1))
    else:
        s1, s2 = a.T @ a / (n1 - 1), b.T @ b / (n2 - 1)  # (d, d)
        w, v = torch.linalg.eigh(s1)
        root = (v * w.clamp(min=0).sqrt()) @ v.T  # S1^1/2
        tr_sqrt = torch.linalg.eigvalsh(root @ s2 @ root).clamp(min=0).sqrt().sum()
    return (mu1 - mu2).pow(2).sum() + tr1 + tr2 - 2 * tr_sqrt


class _FeatureSets:
    """Pool3 features of the reference and SR sets (CPU, float64), gathered from all ranks on :meth:`compute`."""

    def __init__(self) -> None:
        self.real: list[Tensor] = []
        self.fake: list[Tensor] = []

    def update(self, real: Tensor, fake: Tensor) -> None:  # (B, d), (B, d)
        self.real.append(real.detach().double().cpu())
        self.fake.append(fake.detach().double().cpu())

    def compute(self) -> tuple[Tensor, Tensor]:
        """All ranks' features (a collective when distributed: every rank must call it). -> (n1, d), (n2, d)."""
        parts = [(self.real, self.fake)]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, (self.real, self.fake))
        empty = torch.zeros(0, FIDInceptionFeatures.num_features, dtype=torch.float64)
        real = [t for r, _ in parts for t in r]
        fake = [t for _, f in parts for t in f]
        return (torch.cat(real) if real else empty), (torch.cat(fake) if fake else empty)


class FID(Metric):
    """Frechet Inception Distance (Heusel et al. 2017) between the SR set and its GT set, on the 2048-d pool3
    features of :class:`FIDInceptionFeatures` (pytorch-fid's network, as pyiqa), computed by
    :func:`frechet_distance` (float64; exact also for sets smaller than 2048). A set metric: :meth:`update`
    returns None, :meth:`compute` the value (None for fewer than 2 paired images, e.g. an LQ-only set). Features
    are gathered across ranks when distributed."""

    name = "fid"
    higher_is_better = False
    needs_reference = True
    per_image = False

    def __init__(self, weights: dict[str, str] | None = None, random_init: bool = False,
                 features: FIDInceptionFeatures | None = None, input_size: int = 299) -> None:
        super().__init__()
        self.sets = _FeatureSets()
        if features is not None:  # shared with another set's FID (see fork)
            self.features = features
            return
        file = "pt_inception-2015-12-05-6726825d.pth"
        path = None if random_init else resolve_weight(
            "fid", weights, ("fid",), torch_home() / "checkpoints" / file,
            f"the pytorch-fid release (github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{file}) "
            "in $TORCH_HOME/hub/checkpoints/")
        self.features = FIDInceptionFeatures(path, input_size)
        self.freeze()

    def fork(self) -> "FID":
        return FID(features=self.features).to(self.device)

    @torch.no_grad()
    def update(self, sr: Tensor, gt: Tensor | None = None) -> None:
        gt = self.check_pair(sr, gt, required=False)
        if gt is not None:  # an LQ-only set has no reference statistics
            self.sets.update(self.features(gt), self.features(sr))
        return None

    def compute(self) -> float | None:
        real, fake = self.sets.compute()
        if min(real.shape[0], fake.shape[0]) < 2:
            return None
        return float(frechet_distance(real, fake))

    def reset(self) -> None:
        self.sets = _FeatureSets()
