"""The metric interface shared by every image-quality metric, and small helpers (Y channel, border crop, weights).

Images are (B, 3, H, W) RGB in [0, 1] (DESIGN.md). A metric returns one score per image from :meth:`Metric.update`
(``(B,)`` float64 on the CPU), or, for set-level metrics such as FID, nothing per image and a value over the whole
set from :meth:`Metric.compute`. Metric networks are frozen, always in eval mode, and live in the evaluation callback,
never in a LightningModule, so they never enter optimizers or checkpoints.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "Metric",
    "MetricUnavailable",
    "crop_border",
    "rgb_to_y",
    "torch_home",
    "resolve_weight",
]


class MetricUnavailable(RuntimeError):
    """A metric cannot be built here: its weight file (or backing package) is missing.

    Args:
        name: metric name (``"musiq"``).
        file: what is missing: the weight file looked for (or ``"python package 'pyiqa'"``).
        where_from: where to get it and where to put it.
    """

    def __init__(self, name: str, file: str, where_from: str) -> None:
        self.name, self.file, self.where_from = name, file, where_from
        super().__init__(f"metric '{name}' unavailable: missing {file}. Get it from {where_from}.")

    @property
    def reason(self) -> str:
        """One line for summaries: what is missing and where it comes from."""
        return f"missing {self.file} (from {self.where_from})"


class Metric(nn.Module):
    """Base class of all metrics.

    Subclasses set ``name``, ``higher_is_better``, ``needs_reference`` and override :meth:`update` (per-image
    metrics return ``(B,)`` scores) or :meth:`update` + :meth:`compute` + :meth:`reset` (set metrics, ``per_image
    = False``, return None from :meth:`update`). ``train()`` is a no-op: metrics are always in eval mode.
    """

    name: str = "metric"
    higher_is_better: bool = True
    needs_reference: bool = False
    per_image: bool = True

    def freeze(self) -> "Metric":
        self.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "Metric":  # noqa: ARG002 - metrics never train
        return super().train(False)

    @property
    def device(self) -> torch.device:
        for tensor in list(self.parameters()) + list(self.buffers()):
            return tensor.device
        return torch.device("cpu")

    def update(self, sr: Tensor, gt: Tensor | None = None) -> Tensor | None:
        """sr, gt: (B, 3, H, W) in [0, 1]. Returns (B,) per-image scores, or None for set metrics."""
        raise NotImplementedError

    def compute(self) -> float | None:
        """Set-level value (FID); None for per-image metrics (their set value is the mean of the rows)."""
        return None

    def reset(self) -> None:
        """Forget the accumulated set state (set metrics only)."""

    def fork(self) -> "Metric":
        """The same metric for another set: shares the network, with its own set state (per-image metrics have
        none and return themselves)."""
        return self

    def check_pair(self, sr: Tensor, gt: Tensor | None, required: bool = True) -> Tensor | None:
        """Validate shapes; returns ``gt`` (None only when ``not required`` or the metric needs no reference)."""
        if sr.dim() != 4 or sr.shape[1] != 3:
            raise ValueError(f"{self.name}: expected sr of shape (B, 3, H, W), got {tuple(sr.shape)}")
        if not self.needs_reference or (gt is None and not required):
            return gt
        if gt is None:
            raise ValueError(f"{self.name} is a full-reference metric and needs gt")
        if gt.shape != sr.shape:
            raise ValueError(f"{self.name}: sr {tuple(sr.shape)} and gt {tuple(gt.shape)} differ in shape")
        return gt

    def extra_repr(self) -> str:
        return f"name={self.name!r}, higher_is_better={self.higher_is_better}, needs_reference={self.needs_reference}"


def rgb_to_y(x: Tensor) -> Tensor:
    """BT.601 luma as BasicSR/MATLAB ``rgb2ycbcr`` (Y in [16, 235] / 255): ``(16 + 65.481 R + 128.553 G + 24.966 B)
    / 255`` for RGB in [0, 1]. (B, 3, H, W) -> (B, 1, H, W), same dtype."""
    weight = torch.tensor([65.481, 128.553, 24.966], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (16.0 + (x * weight).sum(dim=1, keepdim=True)) / 255.0


def crop_border(x: Tensor, border: int) -> Tensor:
    """Remove ``border`` pixels from each side (BasicSR ``crop_border``). (B, C, H, W) -> (B, C, H-2b, W-2b)."""
    if border <= 0:
        return x
    if x.shape[-1] <= 2 * border or x.shape[-2] <= 2 * border:
        raise ValueError(f"crop_border {border} leaves nothing of an image of size {tuple(x.shape[-2:])}")
    return x[..., border:-border, border:-border]


def torch_home() -> Path:
    """``$TORCH_HOME/hub`` (default ``~/.cache/torch/hub``), where torchvision, CLIP and pyiqa cache weights."""
    return Path(torch.hub.get_dir())


def resolve_weight(
    name: str,
    weights: dict[str, str] | None,
    keys: tuple[str, ...],
    default: Path | str | Sequence[Path | str],
    where_from: str,
) -> str:
    """The local weight file of metric ``name``: ``weights[key]`` for the first ``key`` of ``keys`` that is set,
    else the first existing ``default`` (cache locations). Raises :class:`MetricUnavailable` if there is none."""
    for key in keys:
        if weights and weights.get(key):
            path = os.path.expanduser(str(weights[key]))
            if not Path(path).is_file():
                raise MetricUnavailable(name, f"weight file '{path}' (`weights.{key}` in the config)", where_from)
            return path
    defaults = [Path(os.path.expanduser(str(d))) for d in ([default] if isinstance(default, (str, Path)) else default)]
    for candidate in defaults:
        if Path(candidate).is_file():
            return str(candidate)
    tried = " or ".join(f"'{c}'" for c in defaults)
    raise MetricUnavailable(name, f"weight file {tried} (default cache; or set `weights.{keys[0]}`)", where_from)
