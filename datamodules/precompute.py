"""Precompute the VLM condition features of every training image into a :class:`FeatureCache`.

    python -m datamodules.precompute --config configs/demo/strsr_flux2.yaml --out CACHE_DIR [--limit N]

Only the config's ``model.init_args.generator.init_args.condition`` section is instantiated (the VLM; no DiT, VAE,
discriminator or loss is built) and the training images of its ``data`` section are listed exactly as
``HQImageDataset`` lists them (so the keys are the ``batch["path"]`` strings the training step sees; the bundled
photos when ``train_dirs`` is null).

What one entry describes (the compromise documented in :mod:`datamodules.feature_cache`): one fixed LR view per
image, ``bicubic_lr`` (x ``scale``, clean) of

- ``--view center`` (default): the training crop of the image as the DataModule makes it (``data.crop``, or the
  folder's own ``crop``): with ``center`` (StrSR's released resize-then-centre crop, no flips) or ``resize`` this
  is exactly the crop being restored, up to the degradation draw; with ``random`` crops the features describe the
  centre ``data.crop_size`` window, not the crop being restored;
- ``--view full``: the whole image (content of the whole photo; the VLM resizes within its pixel limits).

A manifest ``cache.json`` (tag, feature width, view, ...) is written next to the entries; training
(``data.feature_cache: CACHE_DIR``) opens the cache with :func:`~datamodules.feature_cache.open_cache`, which takes
the tag from it, so precompute and training always agree on the keys.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from datamodules.crops import center_crop, crop_image
from datamodules.datasets import HQImageDataset
from datamodules.feature_cache import COMMAND, MANIFEST, FeatureCache, bicubic_lr, open_cache
from datamodules.images import DEFAULT_MAX_PIXELS, BadImageError, bundled_photo_tensors, load_image
from models.conditions.text import ConditionEncoder
from models.pretrained import missing_weights_cause

__all__ = ["COMMAND", "MANIFEST", "build_condition", "cache_tag", "open_cache", "training_images", "precompute",
           "main"]


def _model_args(config: dict[str, Any]) -> dict[str, Any]:
    model = config.get("model") or {}
    return model.get("init_args", model)


def condition_section(config: dict[str, Any]) -> dict[str, Any]:
    """The ``{class_path, init_args}`` of the generator's condition in a LightningCLI config dict."""
    generator = _model_args(config).get("generator") or {}
    condition = generator.get("init_args", generator).get("condition")
    if not condition or "class_path" not in condition:
        raise KeyError("the config has no model.init_args.generator.init_args.condition with a class_path")
    return condition


def build_condition(section: dict[str, Any]) -> ConditionEncoder:
    """Instantiate only the condition encoder, with jsonargparse (same type resolution as LightningCLI)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(ConditionEncoder, "condition", required=True)
    cfg = parser.parse_object({"condition": section})
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # jsonargparse >= 4.49: instantiate
    return instantiate(cfg).condition


def cache_tag(section: dict[str, Any], view: str, crop: int, scale: int, crop_mode: str = "random") -> str:
    """``bicubic-x4|center96|<vlm>|<prompt hash>|L<max_tokens>``: changes whenever the LR view (crop size and crop
    mode), the VLM, the prompt, the VLM's image sizing or the truncation change, so stale features are never reused
    (:meth:`FeatureCache.key`)."""
    args = section.get("init_args", {})
    vlm = args.get("vlm") or {}
    vlm_id = vlm.get("pretrained") or "config-" + hashlib.sha1(json.dumps(vlm.get("config"), sort_keys=True,
                                                                         default=str).encode()).hexdigest()[:8]
    prompt = json.dumps([args.get("prompt"), args.get("prompt_ids"), args.get("pre_resize_factor", 28)], default=str)
    where = "full" if view != "center" else f"center{crop}" if crop_mode == "random" else f"{crop_mode}-{crop}"
    return (f"bicubic-x{scale}|{where}|{vlm_id}|{hashlib.sha1(prompt.encode()).hexdigest()[:8]}"
            f"|L{args.get('max_tokens', 512)}")


def training_images(data: dict[str, Any], view: str, limit: int | None = None) -> Iterator[tuple[str, Tensor]]:
    """``(image_id, hq (3, H, W) [0, 1])`` of the training set of a ``data:`` section, ids as in ``batch["path"]``.
    Unreadable files are skipped with a warning, as in training."""
    crop = int(data.get("crop_size", 512))
    max_pixels = int(data.get("max_pixels", DEFAULT_MAX_PIXELS))
    dataset = HQImageDataset(data.get("train_dirs"), crop_size=crop, flip=False, max_pixels=max_pixels,
                             crop=data.get("crop", "random"))
    photos = dict(bundled_photo_tensors()) if not data.get("train_dirs") else {}
    for image_id, mode in list(zip(dataset.paths, dataset.crops))[:limit]:
        try:
            image = photos[image_id.split("/", 1)[1]] if photos else load_image(image_id, max_pixels)  # (3, H, W)
        except BadImageError as err:
            warnings.warn(f"Skipping unreadable training image: {err}", stacklevel=2)
            continue
        if view != "center":
            yield image_id, image
        elif mode == "random":  # no fixed training crop: the centre window
            yield image_id, center_crop(image, crop)
        else:  # the deterministic training crop itself
            yield image_id, crop_image(image, crop, mode, np.random.default_rng(0))


def precompute(config: dict[str, Any], out: str, limit: int | None = None, view: str = "center",
               dtype: str = "bf16", device: str = "cpu", overwrite: bool = False) -> tuple[FeatureCache, int]:
    """Build the condition of ``config``, write the features of its training images under ``out``.
    Returns the cache and the number of entries written (present entries are kept unless ``overwrite``)."""
    if view not in ("center", "full"):
        raise ValueError(f"view must be 'center' or 'full', got '{view}'")
    section = condition_section(config)
    data = config.get("data") or {}
    crop = int(data.get("crop_size", 512))
    degradation = data.get("degradation") or {}
    scale = int(degradation.get("init_args", {}).get("scale", 4))
    condition = build_condition(section)
    if getattr(condition, "vlm", True) is None:
        raise ValueError("the config's condition has no VLM (vlm: null); precompute with the config that loads it")
    condition.to(device)
    modes = HQImageDataset(data.get("train_dirs"), crop_size=crop, crop=data.get("crop", "random")).crops
    tag = cache_tag(section, view, crop, scale, crop_mode="+".join(sorted(set(modes))))
    cache = FeatureCache(out, tag=tag, dtype=dtype)
    written = cache.precompute(condition, training_images(data, view, limit),
                              make_lr=lambda hq: bicubic_lr(hq, scale), overwrite=overwrite, device=device)
    cache.root.mkdir(parents=True, exist_ok=True)
    info = {"tag": tag, "dtype": dtype, "feature_dim": condition.feature_dim, "view": view, "crop_size": crop,
            "scale": scale, "condition": section}
    (cache.root / MANIFEST).write_text(json.dumps(info, indent=1, default=str))
    return cache, written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a training config (LightningCLI YAML, composed or not)")
    parser.add_argument("--out", required=True, help="cache directory (data.feature_cache in training)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N training images")
    parser.add_argument("--view", choices=("center", "full"), default="center",
                        help="LR view: centre crop of data.crop_size (default) or the whole image")
    parser.add_argument("--dtype", default="bf16", help="storage dtype (bf16, fp32)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--overwrite", action="store_true", help="recompute entries already present")
    args = parser.parse_args(argv)
    from onestep_sr.config import load_config  # the merged config, as `--print_config` prints it

    config = load_config(args.config)
    try:
        cache, written = precompute(config, args.out, args.limit, args.view, args.dtype, args.device, args.overwrite)
    except Exception as err:  # jsonargparse re-wraps errors raised while instantiating: report the missing weight
        missing = missing_weights_cause(err)
        if missing is None:
            raise
        print(f"error: {missing}", file=sys.stderr)
        return 2
    print(f"wrote {written} feature entries to {cache.root} (tag '{cache.tag}')")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
