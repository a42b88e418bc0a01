"""Image-quality metrics (plain torch): PSNR/SSIM (BasicSR's Y, pyiqa's Y, RGB), LPIPS, DISTS, FID, CLIPIQA, CLIPIQA+,
NIMA, LIQE, MUSIQ, MANIQA, NIQE, QAlign, QualiCLIP; :class:`MetricCollection`, which runs any subset and reports the
unavailable ones as skipped; the papers' table values and the reproduction report."""

from evaluation.clip_metrics import LIQE, CLIPIQAPlus, QualiCLIP
from evaluation.collection import METRICS, MetricCollection, build_metric, quantize_8bit
from evaluation.fid import FID, frechet_distance
from evaluation.metrics import Metric, MetricUnavailable, crop_border, rgb_to_y
from evaluation.niqe import NIQE, load_pristine_model
from evaluation.no_reference import CLIPIQA, MANIQA, MUSIQ, NIMA
from evaluation.pixel_pyiqa import PSNR_Y_OFFSET_DB, PSNRPyIQA, SSIMPyIQA, yiq_luma
from evaluation.qalign import QAlign
from evaluation.reference import PSNR, SSIM, DISTSMetric, LPIPSMetric, ssim

__all__ = [
    "CLIPIQA",
    "CLIPIQAPlus",
    "DISTSMetric",
    "FID",
    "LIQE",
    "LPIPSMetric",
    "MANIQA",
    "METRICS",
    "MUSIQ",
    "Metric",
    "MetricCollection",
    "MetricUnavailable",
    "NIMA",
    "NIQE",
    "PSNR",
    "PSNRPyIQA",
    "PSNR_Y_OFFSET_DB",
    "QAlign",
    "QualiCLIP",
    "SSIM",
    "SSIMPyIQA",
    "build_metric",
    "crop_border",
    "frechet_distance",
    "load_pristine_model",
    "quantize_8bit",
    "rgb_to_y",
    "ssim",
    "yiq_luma",
]
