"""Running pyiqa's architectures offline: the import guard, where each weight file comes from, checkpoint loading,
and the shared ``update`` of a pyiqa network.

pyiqa (IQA-PyTorch) downloads every file it needs on first use. Here nothing is downloaded: each metric resolves its
files locally (``weights.<key>`` in the config, else pyiqa's own cache ``$TORCH_HOME/hub/pyiqa/``) and hands them to
pyiqa's classes, replacing pyiqa's download calls by the resolved path (:func:`offline`). A missing file raises
:class:`~evaluation.metrics.MetricUnavailable` naming it and its download address.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock
from urllib.parse import unquote

import torch
from torch import Tensor

from evaluation.metrics import Metric, MetricUnavailable, resolve_weight, torch_home

__all__ = ["PYIQA_WEIGHTS", "PyIQAMetric", "load_pyiqa_state", "offline", "pyiqa_module", "pyiqa_weight", "seeded"]

# pyiqa's ``get_url_from_name``: every pyiqa weight file is on this hub repository.
PYIQA_WEIGHTS = "the IQA-PyTorch weights (huggingface.co/chaofengc/IQA-PyTorch-Weights/{file})"
_EXTRA = "the optional extra: pip install 'onestep-sr[iqa]' (PolyForm Noncommercial licence)"


def pyiqa_module(metric: str, module: str) -> ModuleType:
    """``pyiqa.archs.<module>``, or :class:`MetricUnavailable` naming what failed to import (pyiqa itself, or a module
    its architecture imports, e.g. OpenAI's ``clip`` for the CLIP-based metrics)."""
    try:
        return importlib.import_module(f"pyiqa.archs.{module}")
    except ImportError as err:
        raise MetricUnavailable(metric, f"python package 'pyiqa' ({type(err).__name__}: {err})", _EXTRA) from None


def pyiqa_weight(metric: str, weights: dict[str, str] | None, key: str, file: str) -> str:
    """Local path of pyiqa weight ``file``: ``weights[key]``, else ``$TORCH_HOME/hub/pyiqa/<file>``."""
    return resolve_weight(metric, weights, (key,), torch_home() / "pyiqa" / file, PYIQA_WEIGHTS.format(file=file))


def load_pyiqa_state(net: torch.nn.Module, path: str, strict: bool = True) -> None:
    """Load a pyiqa checkpoint (plain, or under ``params``; ``module.`` prefixes stripped)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - older pyiqa files are full pickles of a local file the user chose
        state = torch.load(path, map_location="cpu", weights_only=False)
    state = state.get("params", state)
    net.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=strict)


@contextlib.contextmanager
def offline(module: ModuleType, files: dict[str, str] | None = None, **replace: Any) -> Iterator[None]:
    """Within the block, ``module``'s download helpers return local files and nothing is fetched.

    ``files`` maps a file name (the last part of pyiqa's URL) to its local path: ``load_file_from_url`` and
    ``load_pretrained_network`` (when ``module`` uses them) read that path instead of downloading. Any other URL raises,
    so an unexpected download can never happen silently. ``replace`` patches further names of ``module`` (e.g.
    ``load=...`` for its CLIP loader)."""
    files = dict(files or {})

    def local(url: str, *_: Any, **__: Any) -> str:
        name = unquote(Path(str(url).split("?")[0]).name)  # the hub URL encodes "+" as %2B
        if name in files:
            return files[name]
        if Path(str(url)).is_file():
            return str(url)
        raise RuntimeError(f"pyiqa asked for '{url}', which is not a local file (no downloads here)")

    patches: dict[str, Any] = dict(replace)
    if hasattr(module, "load_file_from_url"):
        patches.setdefault("load_file_from_url", local)
    if hasattr(module, "load_pretrained_network"):
        original: Callable[..., None] = module.load_pretrained_network
        patches.setdefault("load_pretrained_network",
                           lambda net, path, *a, **k: original(net, local(path), *a, **k))
    with contextlib.ExitStack() as stack:
        for name, value in patches.items():
            stack.enter_context(mock.patch.object(module, name, value))
        yield


@contextlib.contextmanager
def seeded(seed: int = 0) -> Iterator[None]:
    """Random-init builds draw from a fixed seed without touching the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class PyIQAMetric(Metric):
    """A pyiqa network in eval mode; ``update`` returns its (B, 1) output as (B,), float64 on the CPU. Inputs are
    float32 in [0, 1], as pyiqa's ``create_metric(...)(image_path)`` feeds them."""

    net: torch.nn.Module

    def score(self, sr: Tensor) -> Tensor:  # (B, 3, H, W) float32 -> (B,) or (B, 1)
        return self.net(sr)

    @torch.no_grad()
    def update(self, sr: Tensor, gt: Tensor | None = None) -> Tensor:
        self.check_pair(sr, gt)
        return self.score(sr.float()).reshape(sr.shape[0]).double().cpu()
