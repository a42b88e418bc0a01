"""Image-quality metrics (plain torch): PSNR/SSIM (Y and RGB), LPIPS, DISTS, FID, CLIPIQA, MUSIQ, MANIQA, NIQE,
and :class:`MetricCollection`, which runs any subset and reports the unavailable ones as skipped."""

from evaluation.collection import METRICS, MetricCollection, build_metric, quantize_8bit
from evaluation.fid import FID, frechet_distance
from evaluation.metrics import Metric, MetricUnavailable, crop_border, rgb_to_y
from evaluation.no_reference import CLIPIQA, MANIQA, MUSIQ, NIQE
from evaluation.reference import PSNR, SSIM, DISTSMetric, LPIPSMetric, ssim

__all__ = [
    "CLIPIQA",
    "DISTSMetric",
    "FID",
    "LPIPSMetric",
    "MANIQA",
    "METRICS",
    "MUSIQ",
    "Metric",
    "MetricCollection",
    "MetricUnavailable",
    "NIQE",
    "PSNR",
    "SSIM",
    "build_metric",
    "crop_border",
    "frechet_distance",
    "quantize_8bit",
    "rgb_to_y",
    "ssim",
]
