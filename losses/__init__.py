"""Loss functions (plain torch): perceptual (DISTS, EA-DISTS, LPIPS, FDL), pixel (MAE/L1), adversarial
(soft-label BCE, RaGAN), approximated R1, and the weighted sum. None owns trainable parameters."""

from losses.adversarial import AdversarialLoss, RaGAN, SoftLabelBCE
from losses.dists import DISTS, L2Pool
from losses.edges import EdgeAwareDISTS, sobel
from losses.fdl import FDL
from losses.lpips import LPIPS
from losses.pixel import L1, MAE
from losses.r1 import ApproxR1
from losses.vgg import build_vgg_features
from losses.weighted import WeightedLoss

__all__ = [
    "AdversarialLoss",
    "ApproxR1",
    "DISTS",
    "EdgeAwareDISTS",
    "FDL",
    "L1",
    "L2Pool",
    "LPIPS",
    "MAE",
    "RaGAN",
    "SoftLabelBCE",
    "WeightedLoss",
    "build_vgg_features",
    "sobel",
]
