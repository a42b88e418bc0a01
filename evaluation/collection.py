"""A named set of metrics over one evaluation set: per-image rows, set means, set-level metrics, skipped metrics.

A metric whose weights (or backing package) are missing is not built: it is listed in :attr:`MetricCollection.skipped`
with the reason, and every other metric still runs. Reference metrics on an LQ-only set and set metrics with too few
images are reported as skipped for that set, never silently dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from evaluation.clip_metrics import LIQE, CLIPIQAPlus, QualiCLIP
from evaluation.fid import FID
from evaluation.metrics import Metric, MetricUnavailable
from evaluation.niqe import NIQE
from evaluation.no_reference import CLIPIQA, MANIQA, MUSIQ, NIMA
from evaluation.pixel_pyiqa import PSNRPyIQA, SSIMPyIQA
from evaluation.qalign import QAlign
from evaluation.reference import PSNR, SSIM, DISTSMetric, LPIPSMetric

__all__ = ["METRICS", "RENAMED", "MetricCollection", "build_metric", "quantize_8bit"]

Factory = Callable[[dict[str, str] | None, int, bool, dict[str, Any]], Metric]

# name -> factory(weights, crop_border, random_init, config); ``config`` is only used with random_init.
# PSNR/SSIM name their convention: BasicSR's BT.601 studio-range Y, or pyiqa's full-range YIQ Y (StrSR's tables).
METRICS: dict[str, Factory] = {
    "psnr_y_basicsr": lambda w, b, r, c: PSNR(y_channel=True, crop_border=b),
    "ssim_y_basicsr": lambda w, b, r, c: SSIM(y_channel=True, crop_border=b),
    "psnr_y_pyiqa": lambda w, b, r, c: PSNRPyIQA(crop_border=b),
    "ssim_y_pyiqa": lambda w, b, r, c: SSIMPyIQA(crop_border=b),
    "psnr_rgb": lambda w, b, r, c: PSNR(y_channel=False, crop_border=b),
    "ssim_rgb": lambda w, b, r, c: SSIM(y_channel=False, crop_border=b),
    "lpips_vgg": lambda w, b, r, c: LPIPSMetric("vgg", w, r),
    "lpips_alex": lambda w, b, r, c: LPIPSMetric("alex", w, r),
    "dists": lambda w, b, r, c: DISTSMetric(w, r),
    "fid": lambda w, b, r, c: FID(w, r, **c),
    "clipiqa": lambda w, b, r, c: CLIPIQA(w, r, c or None),
    "clipiqa+": lambda w, b, r, c: CLIPIQAPlus(w, r, c or None),
    "nima": lambda w, b, r, c: NIMA(w, r, c or None),
    "liqe": lambda w, b, r, c: LIQE(w, r, c or None),
    "musiq": lambda w, b, r, c: MUSIQ(w, r, c or None),
    "maniqa": lambda w, b, r, c: MANIQA(w, r, c or None),
    "niqe": lambda w, b, r, c: NIQE(w, r),
    "qalign": lambda w, b, r, c: QAlign(w, r),
    "qualiclip": lambda w, b, r, c: QualiCLIP(w, r, c or None),
}
_BORDER_METRICS = ("psnr_y_basicsr", "ssim_y_basicsr", "psnr_y_pyiqa", "ssim_y_pyiqa", "psnr_rgb", "ssim_rgb")
# Former names, refused with a pointer (a bare "psnr" hides which Y it means).
RENAMED = {"psnr": "psnr_y_basicsr (BasicSR) or psnr_y_pyiqa (pyiqa)",
           "ssim": "ssim_y_basicsr (BasicSR) or ssim_y_pyiqa (pyiqa)", "lpips": "lpips_vgg or lpips_alex"}


def build_metric(name: str, weights: dict[str, str] | None = None, crop_border: int = 0, random_init: bool = False,
                 config: dict[str, Any] | None = None) -> Metric:
    """One metric by name (see :data:`METRICS`). Raises :class:`MetricUnavailable` when its weights are missing."""
    if name in RENAMED:
        raise ValueError(f"metric '{name}' is now named by its convention: use {RENAMED[name]}")
    if name not in METRICS:
        raise ValueError(f"unknown metric '{name}'; available: {sorted(METRICS)}")
    return METRICS[name](weights, int(crop_border), random_init, dict(config or {}))


def quantize_8bit(x: Tensor) -> Tensor:
    """Round to 8-bit levels, as saving the image to PNG does (BasicSR and pyiqa score saved images)."""
    return (x.clamp(0, 1) * 255).round() / 255


class MetricCollection(nn.Module):
    """Metrics of one evaluation set.

    Args:
        names: metric names (keys of :data:`METRICS`), in table order.
        weights: weight-file paths by key (``vgg16``, ``alexnet``, ``dists``, ``fid``, ``clipiqa``, ``clipiqa+``,
            ``nima``, ``liqe``, ``musiq``, ``maniqa``, ``niqe``, ``qualiclip``; ``qalign``: a snapshot folder); missing
            keys fall back to the default caches under ``$TORCH_HOME/hub`` (and the Hugging Face cache for QAlign).
        crop_border: pixels removed on each side for PSNR/SSIM (usually the scale).
        device: where the metric networks run.
        quantize: round SR (and GT) to 8 bit before scoring, as if the images were saved as PNG.
        random_init: build learned metrics with random weights (tests, smoke runs; the numbers mean nothing).
        configs: per-metric architecture configs for ``random_init`` (e.g. a tiny MUSIQ).
    """

    def __init__(self, names: Sequence[str], weights: dict[str, str] | None = None, crop_border: int = 4,
                 device: str | torch.device = "cpu", quantize: bool = True, random_init: bool = False,
                 configs: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.names, self.crop_border, self.quantize = list(dict.fromkeys(names)), int(crop_border), quantize
        self.weights, self.random_init, self.configs = dict(weights or {}), random_init, dict(configs or {})
        self.metrics = nn.ModuleDict()
        self.unavailable: dict[str, str] = {}  # build-time reasons (kept across sets)
        self.skipped: dict[str, str] = {}  # all reasons for this set (build-time + per-set)
        self.rows: list[dict[str, Any]] = []
        for name in self.names:
            try:
                self.metrics[name] = build_metric(name, self.weights, crop_border, random_init, self.configs.get(name))
            except MetricUnavailable as err:
                self.unavailable[name] = err.reason
            except ValueError:
                raise
            except Exception as err:  # noqa: BLE001 - a broken optional backend must not stop the other metrics
                self.unavailable[name] = f"failed to build: {type(err).__name__}: {err}"
        self.skipped = dict(self.unavailable)
        self._device = torch.device(device)
        self.to(self._device)

    @property
    def device(self) -> torch.device:
        """Where the metrics run (inputs are moved here)."""
        return self._device

    def higher_is_better(self, name: str) -> bool | None:
        metric = self.metrics[name] if name in self.metrics else None
        return None if metric is None else metric.higher_is_better

    def fork(self, crop_border: int | None = None) -> "MetricCollection":
        """A collection for another set: shares the metric networks, fresh rows and set state, PSNR/SSIM rebuilt
        with ``crop_border`` (default: this one's)."""
        other = MetricCollection([], self.weights, self.crop_border if crop_border is None else crop_border,
                                 self.device, self.quantize, self.random_init, self.configs)
        other.names, other.unavailable = list(self.names), dict(self.unavailable)
        for name, metric in self.metrics.items():
            if name in _BORDER_METRICS:
                other.metrics[name] = build_metric(name, crop_border=other.crop_border).to(self.device)
            else:
                other.metrics[name] = metric.fork()
        other.rows, other.skipped = [], dict(self.unavailable)
        return other

    @torch.no_grad()
    def update(self, sr: Tensor, gt: Tensor | None, names: Sequence[str]) -> list[dict[str, Any]]:
        """Score a batch. sr, gt: (B, 3, H, W) in [0, 1] (gt None for LQ-only sets); ``names`` one per image.
        Appends and returns one row ``{"name": ..., metric: float, ...}`` per image."""
        if len(names) != sr.shape[0]:
            raise ValueError(f"got {len(names)} names for a batch of {sr.shape[0]} images")
        sr = sr.detach().to(self.device, torch.float32)
        gt = None if gt is None else gt.detach().to(self.device, torch.float32)
        if self.quantize:
            sr, gt = quantize_8bit(sr), (None if gt is None else quantize_8bit(gt))
        rows: list[dict[str, Any]] = [{"name": str(n)} for n in names]
        for name, metric in list(self.metrics.items()):
            if name in self.skipped or (metric.needs_reference and gt is None):
                continue
            try:
                scores = metric.update(sr, gt)
            except Exception as err:  # noqa: BLE001 - one failing metric must not stop the others
                self.skipped[name] = f"failed on {list(names)}: {type(err).__name__}: {err}"
                for row in self.rows:
                    row.pop(name, None)
                continue
            if scores is not None:
                for row, value in zip(rows, scores.tolist(), strict=True):
                    row[name] = float(value)
        self.rows.extend(rows)
        return rows

    def compute(self, rows: Sequence[dict[str, Any]] | None = None) -> dict[str, float]:
        """Set values in :attr:`names` order: the mean of the per-image rows (``rows``, default :attr:`rows`) and
        the set metrics. Metrics without a value are added to :attr:`skipped` with the reason."""
        rows = self.rows if rows is None else rows
        results: dict[str, float] = {}
        for name in self.names:
            if name in self.skipped:
                continue
            metric = self.metrics[name]
            if metric.per_image:
                values = [row[name] for row in rows if name in row]
                if values:
                    results[name] = math.fsum(values) / len(values)
                else:
                    self.skipped[name] = "no ground truth in this set" if metric.needs_reference else "no images"
            else:
                value = metric.compute()
                if value is None:
                    self.skipped[name] = "needs at least 2 images with ground truth"
                else:
                    results[name] = value
        return results

    def reset(self) -> None:
        """Forget rows, set state and per-set skip reasons (build-time reasons stay)."""
        self.rows = []
        self.skipped = dict(self.unavailable)
        for metric in self.metrics.values():
            metric.reset()
