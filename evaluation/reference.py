"""Full-reference per-image metrics: PSNR, SSIM (BasicSR: Y channel or RGB), LPIPS, DISTS (pyiqa's PSNR/SSIM:
``pixel_pyiqa.py``; the set-level FID: ``fid.py``).

PSNR/SSIM follow BasicSR (``basicsr/metrics/psnr_ssim.py``): float64, optional border crop, Y = BT.601 luma
``(16 + 65.481 R + 128.553 G + 24.966 B) / 255``; SSIM uses the 11x11 Gaussian window with sigma 1.5, K1 = 0.01,
K2 = 0.03, population statistics, the "valid" part of the SSIM map, and the mean over channels (Wang et al. 2004,
eq. 13) -- the same numbers as scikit-image ``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1)``.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace
from unittest import mock

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evaluation.metrics import Metric, MetricUnavailable, crop_border, resolve_weight, rgb_to_y, torch_home
from models.pretrained import MissingWeightsError, Source, load_state_dict_file

__all__ = ["PSNR", "SSIM", "LPIPSMetric", "DISTSMetric", "gaussian_window", "ssim"]

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
    """Peak signal-to-noise ratio ``10 log10(1 / MSE)`` per image (data range 1), on BasicSR's Y (``psnr_y_basicsr``)
    or RGB (``psnr_rgb``: also pyiqa's default ``psnr``, which adds 1e-8 to the MSE); ``inf`` for identical images (as
    BasicSR)."""

    def __init__(self, y_channel: bool = True, crop_border: int = 0) -> None:
        super().__init__(y_channel, crop_border)
        self.name = "psnr_y_basicsr" if y_channel else "psnr_rgb"

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
    """Structural similarity (Wang et al. 2004) per image on BasicSR's Y (``ssim_y_basicsr``) or RGB (``ssim_rgb``,
    BasicSR's; pyiqa's ``ssimc`` rounds to integers and differs slightly)."""

    def __init__(self, y_channel: bool = True, crop_border: int = 0) -> None:
        super().__init__(y_channel, crop_border)
        self.name = "ssim_y_basicsr" if y_channel else "ssim_rgb"
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
    """LPIPS v0.1 (Zhang et al. 2018, eq. 1) from the ``lpips`` package: ``net="vgg"`` (``lpips_vgg``) or ``"alex"``
    (``lpips_alex``, pyiqa's default ``lpips``, the LPIPS of both papers' tables). The trunk comes from a local torchvision weight file (``weights.vgg16``
    / ``weights.alexnet``, default ``$TORCH_HOME/hub/checkpoints/``); the linear layers ship with ``lpips``.
    ``random_init=True`` keeps lpips' random trunk (tests)."""

    higher_is_better = False
    needs_reference = True
    FILES = {"vgg": ("vgg16", "vgg16-397923af.pth"), "alex": ("alexnet", "alexnet-owt-7be5be79.pth")}

    def __init__(self, net: str = "vgg", weights: dict[str, str] | None = None, random_init: bool = False) -> None:
        super().__init__()
        self.name = f"lpips_{net}"
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
        if random_init:
            from losses.dists import DISTS

            self.net = DISTS(vgg=Source(config={}), alpha_beta=None)
        else:
            vgg = resolve_weight("dists", weights, ("vgg16",), torch_home() / "checkpoints" / "vgg16-397923af.pth",
                                 _TV.format(file="vgg16-397923af.pth"))
            ab = resolve_weight("dists", weights, ("dists",), torch_home() / "pyiqa" / "DISTS_weights-f5e65c96.pth",
                                "the DISTS release (github.com/dingkeyan93/DISTS weights.pt) or the pyiqa weights "
                                "(huggingface chaofengc/IQA-PyTorch-Weights) in $TORCH_HOME/hub/pyiqa/")
            from losses.dists import DISTS

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
