"""NIQE (Mittal et al., IEEE SPL 2013) through pyiqa's ``calculate_niqe``, with its pristine model read from either
format in use: pyiqa's / MATLAB's ``niqe_modelparameters.mat`` or BasicSR's ``niqe_pris_params.npz``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from evaluation.metrics import MetricUnavailable, resolve_weight, torch_home
from evaluation.pyiqa_backend import PYIQA_WEIGHTS, PyIQAMetric, pyiqa_module

__all__ = ["NIQE", "load_pristine_model"]

# (mean key, covariance key) of each file format
_KEYS = {".mat": ("mu_prisparam", "cov_prisparam"), ".npz": ("mu_pris_param", "cov_pris_param")}


def load_pristine_model(path: str | Path) -> tuple[Tensor, Tensor]:
    """The NIQE pristine multivariate Gaussian: mean (36,) and covariance (36, 36), float64.

    ``.mat``: pyiqa's ``niqe_modelparameters.mat`` (the MATLAB release's ``mu_prisparam``, ``cov_prisparam``).
    ``.npz``: BasicSR's ``basicsr/metrics/niqe_pris_params.npz`` (``mu_pris_param``, ``cov_pris_param``; its
    ``gaussian_window`` is not needed: pyiqa builds the same 7x7, sigma 7/6 window itself)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _KEYS:
        raise ValueError(f"NIQE pristine model '{path}': expected a .mat or .npz file")
    mu_key, cov_key = _KEYS[suffix]
    if suffix == ".mat":
        import scipy.io

        params = scipy.io.loadmat(str(path))
    else:
        params = dict(np.load(path))
    missing = [k for k in (mu_key, cov_key) if k not in params]
    if missing:
        raise ValueError(f"NIQE pristine model '{path}' lacks {missing} (has {sorted(params)})")
    mu = torch.from_numpy(np.ravel(params[mu_key]).astype(np.float64))
    cov = torch.from_numpy(np.asarray(params[cov_key], dtype=np.float64))
    if cov.shape != (mu.numel(), mu.numel()):
        raise ValueError(f"NIQE pristine model '{path}': mean {tuple(mu.shape)} and covariance {tuple(cov.shape)}")
    return mu, cov


def _basicsr_npz() -> list[Path]:
    """BasicSR's file inside an installed ``basicsr`` package (found without importing it)."""
    spec = importlib.util.find_spec("basicsr")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(p) / "metrics" / "niqe_pris_params.npz" for p in spec.submodule_search_locations]


class NIQE(PyIQAMetric):
    """NIQE as pyiqa ``niqe``: Y of full-range YIQ scaled to 0..255 and rounded, NSS features of 96x96 blocks at two
    scales, and the distance ``sqrt((mu_p - mu)^T ((S_p + S) / 2)^+ (mu_p - mu))`` to the pristine model (eq. 10);
    lower is better. Needs images of at least 96x96 pixels.

    Pristine model (``weights.niqe``): a ``.mat`` or ``.npz`` file (:func:`load_pristine_model`); default pyiqa's
    cache ``$TORCH_HOME/hub/pyiqa/niqe_modelparameters.mat``, else the file inside an installed BasicSR.
    ``random_init`` draws a pristine model (36-d mean, SPD covariance) from a fixed seed.

    Scores are computed from float32 input, as pyiqa's ``create_metric("niqe")(path)`` reads images: the Y
    conversion runs in the input dtype before the rounding, so float64 input can round a few luma values the other
    way at the .5 ties (a difference of the order of 1e-4 on the score; the tests measure it).
    """

    name = "niqe"
    higher_is_better = False

    def __init__(self, weights: dict[str, str] | None = None, random_init: bool = False) -> None:
        super().__init__()
        self.arch = pyiqa_module("niqe", "niqe_arch")
        if random_init:
            g = torch.Generator().manual_seed(0)
            a = torch.randn(36, 36, generator=g, dtype=torch.float64)
            mu, cov = torch.rand(36, generator=g, dtype=torch.float64), a @ a.T / 36 + torch.eye(36, dtype=torch.float64)
        else:
            file = "niqe_modelparameters.mat"
            path = resolve_weight("niqe", weights, ("niqe",), [torch_home() / "pyiqa" / file, *_basicsr_npz()],
                                  PYIQA_WEIGHTS.format(file=file) + " or BasicSR (basicsr/metrics/niqe_pris_params.npz)")
            try:
                mu, cov = load_pristine_model(path)
            except ValueError as err:
                raise MetricUnavailable("niqe", f"a usable pristine model ({err})",
                                        PYIQA_WEIGHTS.format(file=file)) from None
        self.register_buffer("mu", mu, persistent=False)  # (36,)
        self.register_buffer("cov", cov, persistent=False)  # (36, 36)
        self.freeze()

    def score(self, sr: Tensor) -> Tensor:  # (B, 3, H, W) float32 -> (B,)
        if min(sr.shape[-2:]) < 96:
            raise ValueError(f"niqe needs images of at least 96x96 pixels, got {tuple(sr.shape[-2:])}")
        return self.arch.calculate_niqe(sr, 0, True, "yiq", self.mu, self.cov).reshape(sr.shape[0])
