"""Full-reference metrics: PSNR, SSIM (Y channel or RGB), LPIPS, DISTS, and the set-level FID.

PSNR/SSIM follow BasicSR (``basicsr/metrics/psnr_ssim.py``): float64, optional border crop, Y = BT.601 luma
``(16 + 65.481 R + 128.553 G + 24.966 B) / 255``; SSIM uses the 11x11 Gaussian window with sigma 1.5, K1 = 0.01,
K2 = 0.03, population statistics, the "valid" part of the SSIM map, and the mean over channels (Wang et al. 2004,
eq. 13) -- the same numbers as scikit-image ``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1)``.
"""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace
from unittest import mock

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from evaluation.metrics import Metric, MetricUnavailable, crop_border, resolve_weight, rgb_to_y, torch_home
from models.pretrained import MissingWeightsError, Source, load_state_dict_file

__all__ = ["PSNR", "SSIM", "LPIPSMetric", "DISTSMetric", "FID", "FIDInceptionFeatures", "frechet_distance", "gaussian_window", "ssim"]

_TV = "torchvision's ImageNet weights (https://download.pytorch.org/models/{file}) in $TORCH_HOME/hub/checkpoints/"


class _PixelMetric(Metric):
    """Shared preparation of PSNR/SSIM: float64, Y channel or RGB, border crop."""

    needs_reference = True

    def __init__(self, y_channel: bool = True, crop_border: int = 0) -> None:
        super().__init__()
        self.y_channel, self.crop_border = y_channel, int(crop_border)

    def prepare(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, 1 or 3, H - 2b, W - 2b) float64
        x = x.double()
        x = rgb_to_y(x) if self.y_channel else x
        return crop_border(x, self.crop_border)


class PSNR(_PixelMetric):
    """Peak signal-to-noise ratio ``10 log10(1 / MSE)`` per image (data range 1), on Y (``psnr``) or RGB
    (``psnr_rgb``); ``inf`` for identical images (as BasicSR)."""

    def __init__(self, y_channel: bool = True, crop_border: int = 0) -> None:
        super().__init__(y_channel, crop_border)
        self.name = "psnr" if y_channel else "psnr_rgb"

    @torch.no_grad()
    def update(self, sr: Tensor, gt: Tensor | None = None) -> Tensor:
        gt = self.check_pair(sr, gt)
        mse = (self.prepare(sr) - self.prepare(gt)).pow(2).mean(dim=(1, 2, 3))  # (B,)
        return (10.0 * torch.log10(1.0 / mse)).cpu()


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float64) -> Tensor:
    """Normalised 2-D Gaussian window (size, size), the outer product of ``exp(-x^2 / (2 sigma^2))``."""
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0, window: Tensor | None = None) -> Tensor:
    """Mean SSIM per image (mean over the valid map and over channels). x, y: (B, C, H, W) -> (B,)."""
    window = gaussian_window(dtype=x.dtype) if window is None else window.to(x.dtype)
    k = window.shape[-1]
    if min(x.shape[-2:]) < k:
        raise ValueError(f"SSIM needs images of at least {k}x{k} pixels, got {tuple(x.shape[-2:])}")
    c = x.shape[1]
    w = window.to(x.device).expand(c, 1, k, k)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def filt(t: Tensor) -> Tensor:  # valid Gaussian filtering, (B, C, H, W) -> (B, C, H-k+1, W-k+1)
        return F.conv2d(t, w, groups=c)

    mx, my = filt(x), filt(y)
    vx, vy, cov = filt(x * x) - mx * mx, filt(y * y) - my * my, filt(x * y) - mx * my
    smap = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return smap.mean(dim=(1, 2, 3))


class SSIM(_PixelMetric):
    """Structural similarity (Wang et al. 2004) per image on Y (``ssim``) or RGB (``ssim_rgb``)."""

    def __init__(self, y_channel: bool = True, crop_border: int = 0) -> None:
        super().__init__(y_channel, crop_border)
        self.name = "ssim" if y_channel else "ssim_rgb"
        self.register_buffer("window", gaussian_window(11, 1.5), persistent=False)  # (11, 11)

    @torch.no_grad()
    def update(self, sr: Tensor, gt: Tensor | None = None) -> Tensor:
        gt = self.check_pair(sr, gt)
        return ssim(self.prepare(sr), self.prepare(gt), 1.0, self.window).cpu()


def _fill_trunk(slices: list[nn.Module], path: str, component: str) -> None:
    """Copy torchvision ``features.N.*`` weights into lpips' slices (their children are named by N)."""
    state = load_state_dict_file(component, path)
    state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")} or state
    for piece in slices:
        for index, layer in piece.named_children():
            own = {k.split(".", 1)[1]: v for k, v in state.items() if k.split(".", 1)[0] == index}
            if list(layer.state_dict()) and not own:
                raise ValueError(f"'{path}' is not a torchvision state dict: no weights for features.{index}")
            layer.load_state_dict(own)


class _TrunkOnly:
    """``torchvision.models`` for lpips, except that ``vgg16`` builds only its conv trunk with torchvision's init
    (:func:`losses.vgg.build_vgg_features`), skipping the 120 M-parameter classifier lpips throws away."""

    def __getattr__(self, name: str) -> object:
        import torchvision.models

        return getattr(torchvision.models, name)

    @staticmethod
    def vgg16(**_: object) -> SimpleNamespace:
        from losses.vgg import build_vgg_features

        return SimpleNamespace(features=build_vgg_features(Source(config={}), "vgg16"))


class LPIPSMetric(Metric):
    """LPIPS v0.1 (Zhang et al. 2018, eq. 1) from the ``lpips`` package: ``net="vgg"`` (``lpips``) or ``"alex"``
    (``lpips_alex``, pyiqa's default ``lpips``). The trunk comes from a local torchvision weight file (``weights.vgg16``
    / ``weights.alexnet``, default ``$TORCH_HOME/hub/checkpoints/``); the linear layers ship with ``lpips``.
    ``random_init=True`` keeps lpips' random trunk (tests)."""

    higher_is_better = False
    needs_reference = True
    FILES = {"vgg": ("vgg16", "vgg16-397923af.pth"), "alex": ("alexnet", "alexnet-owt-7be5be79.pth")}

    def __init__(self, net: str = "vgg", weights: dict[str, str] | None = None, random_init: bool = False) -> None:
        super().__init__()
        self.name = "lpips" if net == "vgg" else f"lpips_{net}"
        key, file = self.FILES[net]
        path = None if random_init else resolve_weight(
            self.name, weights, (key, self.name), torch_home() / "checkpoints" / file, _TV.format(file=file)
        )
        import lpips  # slow to import: only once the weights are known to be there
        import lpips.pretrained_networks

        with warnings.catch_warnings(), mock.patch.object(lpips.pretrained_networks, "tv", _TrunkOnly()):
            warnings.simplefilter("ignore")
            self.net = lpips.LPIPS(net=net, version="0.1", pnet_rand=True, verbose=False)
        if path is not None:
            trunk = self.net.net
            try:
                _fill_trunk([trunk.slice1, trunk.slice2, trunk.slice3, trunk.slice4, trunk.slice5], path, self.name)
            except (ValueError, RuntimeError, KeyError) as err:
                raise MetricUnavailable(self.name, f"a usable weight file ({err})", _TV.format(file=file)) from None
        self.freeze()

    @torch.no_grad()
    def update(self, sr: Tensor, gt: Tensor | None = None) -> Tensor:
        gt = self.check_pair(sr, gt)
        return self.net(sr.float(), gt.float(), normalize=True).flatten().double().cpu()  # (B,)


class DISTSMetric(Metric):
    """DISTS (Ding et al. 2020) through :class:`losses.dists.DISTS`: VGG16 from ``weights.vgg16`` and the learned
    alpha/beta from ``weights.dists`` (pyiqa's ``DISTS_weights-f5e65c96.pth`` or the official ``weights.pt``)."""

    name = "dists"
    higher_is_better = False
    needs_reference = True

    def __init__(self, weights: dict[str, str] | None = None, random_init: bool = False) -> None:
        super().__init__()
        from losses.dists import DISTS

        if random_init:
            self.net = DISTS(vgg=Source(config={}), alpha_beta=None)
        else:
            vgg = resolve_weight("dists", weights, ("vgg16",), torch_home() / "checkpoints" / "vgg16-397923af.pth",
                                 _TV.format(file="vgg16-397923af.pth"))
            ab = resolve_weight("dists", weights, ("dists",), torch_home() / "pyiqa" / "DISTS_weights-f5e65c96.pth",
                                "the DISTS release (github.com/dingkeyan93/DISTS weights.pt) or the pyiqa weights "
                                "(huggingface chaofengc/IQA-PyTorch-Weights) in $TORCH_HOME/hub/pyiqa/")
            try:
                self.net = DISTS(vgg=Source(pretrained=vgg), alpha_beta=ab)
            except MissingWeightsError as err:
                raise MetricUnavailable("dists", f"usable weights ({str(err).splitlines()[0]})",
                                        "the DISTS release or torchvision; see the README") from None
        self.freeze()

    @torch.no_grad()
    def update(self, sr: Tensor, gt: Tensor | None = None) -> Tensor:
        gt = self.check_pair(sr, gt)
        return self.net(sr, gt, reduction="none").double().cpu()  # (B,)


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
        net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = FIDInceptionA(192, 32), FIDInceptionA(256, 64), FIDInceptionA(288, 64)
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
    :func:`frechet_distance` (float64; exact, also for sets smaller than 2048). A set metric: :meth:`update` returns None, :meth:`compute` the value (None for fewer
    than 2 paired images, e.g. an LQ-only set). Features are gathered across ranks when distributed."""

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
