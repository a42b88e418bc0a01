"""Q-Align (Wu et al., ICML 2024) as pyiqa ``qalign`` (StrSR Tables 1-3): mPLUG-Owl2 (a LLaMA-2 7B language model
with a ViT-L visual encoder, about 8 B parameters, fp16) asked "How would you rate the quality of this image?";
the score is the softmax over the logits of the words (excellent, good, fair, poor, bad) at the answer position,
weighted by (5, 4, 3, 2, 1): a value in [1, 5], higher is better. Images are padded to a square with the CLIP mean
colour and resized by the model's CLIP image processor (448 px); pyiqa scores one image at a time.

The weights are the hub snapshot ``q-future/one-align`` (config, tokenizer, image processor and ~16 GB of weights):
``weights.qalign`` names a local copy of that folder (``hf download q-future/one-align --local-dir DIR``); without it
the Hugging Face cache is used when it holds the snapshot. pyiqa's loader names the hub id in four places; they are
pointed at the local folder, and nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import Tensor

from evaluation.metrics import MetricUnavailable
from evaluation.pyiqa_backend import PyIQAMetric, pyiqa_module

__all__ = ["QAlign", "qalign_snapshot"]

REPO = "q-future/one-align"
_WHERE = (f"huggingface.co/{REPO} (hf download {REPO} --local-dir DIR, then set weights.qalign to DIR, or keep it in "
          "the Hugging Face cache)")


def qalign_snapshot(weights: dict[str, str] | None) -> str:
    """The local snapshot folder of ``q-future/one-align``: ``weights.qalign``, else the Hugging Face cache."""
    if weights and weights.get("qalign"):
        folder = Path(weights["qalign"]).expanduser()
        if not (folder / "config.json").is_file():
            raise MetricUnavailable("qalign", f"the {REPO} snapshot folder '{folder}' (no config.json)", _WHERE)
        return str(folder)
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(REPO, "config.json")
    except Exception:  # noqa: BLE001 - no hub client or an unreadable cache: same as not cached
        cached = None
    if isinstance(cached, str) and Path(cached).is_file():
        return str(Path(cached).parent)
    raise MetricUnavailable("qalign", f"the {REPO} snapshot (config, tokenizer, ~16 GB fp16 weights; "
                                      "`weights.qalign` or the Hugging Face cache)", _WHERE)


def _invert_attention_mask(self: Any, mask: Tensor) -> Tensor:
    """transformers 4.x ``ModuleUtilsMixin.invert_attention_mask`` (removed in transformers 5), which pyiqa's
    mPLUG-Owl2 visual abstractor still calls: 1 = attend -> 0, 0 = masked -> the dtype's most negative value."""
    extended = mask[:, None, :, :] if mask.dim() == 3 else mask[:, None, None, :]
    extended = extended.to(dtype=self.dtype)
    return (1.0 - extended) * torch.finfo(self.dtype).min


@contextlib.contextmanager
def _from_folder(folder: str, *classes: Any) -> Iterator[None]:
    """``cls.from_pretrained(REPO, ...)`` of each class reads ``folder`` instead of the hub id."""
    with contextlib.ExitStack() as stack:
        for cls in classes:
            original = cls.from_pretrained

            def local(_repo: str, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
                return _original(folder, *args, **kwargs)

            stack.enter_context(mock.patch.object(cls, "from_pretrained", local))
        yield


class QAlign(PyIQAMetric):
    """pyiqa's ``QAlign`` (fp16) on a local ``q-future/one-align`` snapshot; see the module docstring. There is no
    random-weight build of the 8 B model: ``random_init`` reports the metric unavailable (the tests build the same
    classes from a tiny snapshot folder instead)."""

    name = "qalign"

    def __init__(self, weights: dict[str, str] | None = None, random_init: bool = False) -> None:
        super().__init__()
        arch = pyiqa_module(self.name, "qalign_arch")
        if random_init:
            raise MetricUnavailable(self.name, "a random-weight build (an 8 B multimodal LLM: none is made)",
                                    "a snapshot folder as weights.qalign (the tests write a tiny one)")
        folder = qalign_snapshot(weights)
        owl = importlib.import_module("pyiqa.archs.q_align.modeling_mplug_owl2")
        visual = importlib.import_module("pyiqa.archs.q_align.visual_encoder")
        if not hasattr(visual.MplugOwlVisualAbstractorModel, "invert_attention_mask"):
            visual.MplugOwlVisualAbstractorModel.invert_attention_mask = _invert_attention_mask
        with _from_folder(folder, owl.MPLUGOwl2LlamaForCausalLM, owl.LlamaTokenizer, arch.CLIPImageProcessor):
            self.net = arch.QAlign(dtype="fp16")
        self.freeze()

    def score(self, sr: Tensor) -> Tensor:  # (B, 3, H, W) -> (B,); pyiqa takes one image per call
        return torch.cat([self.net(sr[i : i + 1]).float().reshape(1) for i in range(sr.shape[0])])
