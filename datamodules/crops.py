"""How a training image becomes one ``size x size`` HQ crop, and the per-folder settings that choose it.

Three crop modes, named in ``data.crop`` (the default of every folder) or per folder (:class:`TrainFolder`):

- ``random``: a random ``size x size`` window, reflect padding first when the image is smaller (BasicSR
  ``RealESRGANDataset``; LSDIR in SeeSR, OMGSR and TUDSR).
- ``resize``: the whole image resized to ``size x size`` with Lanczos, as OMGSR does for the FFHQ faces
  (wuer5/OMGSR ``dataset/my_dataset.py``: ``resize((512, 512), LANCZOS)``; square images, the aspect is not kept).
- ``center``: the released StrSR ``center_crop_arr`` (jkwang28/StrSR ``HYPIR/dataset/utils.py``, from
  openai/guided-diffusion): halve with box filtering while the short side is >= 2 x ``size``, resize with bicubic
  so that the short side is ``size``, take the centre ``size x size`` window.

Resizing runs in Pillow on the 8-bit image, as in the authors' code (an 8-bit file round-trips exactly).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import yaml
import torch.nn.functional as F
from PIL import Image

from .images import DataError, scan_images, tensor_to_uint8, uint8_to_tensor

__all__ = ["CROP_MODES", "CropMode", "TrainFolder", "center_crop", "crop_image", "folder_specs", "list_folder",
           "random_crop", "reflect_pad_to", "resize_center_crop", "resize_to_square"]

CropMode = Literal["random", "center", "resize"]
CROP_MODES: tuple[str, ...] = ("random", "center", "resize")


@dataclass
class TrainFolder:
    """One folder of HQ training images (searched recursively).

    Args:
        path: the folder.
        crop: ``random``, ``center`` or ``resize`` (module docstring); ``None``: the DataModule's ``crop``.
        limit: keep the first ``limit`` images in sorted path order ("the first 10,000 FFHQ images"); ``None``: all.
    """

    path: str
    crop: CropMode | None = None
    limit: int | None = None


def folder_specs(folders: str | TrainFolder | Mapping | Sequence[str | TrainFolder | Mapping] | None,
                 default_crop: str) -> list[TrainFolder]:
    """Normalise ``data.train_dirs`` (one folder, or a list of folders and :class:`TrainFolder` entries; dicts as
    YAML gives them) to :class:`TrainFolder` objects with their crop mode filled in. Raises :class:`DataError`."""
    if folders is None:
        return []
    if isinstance(folders, (str, os.PathLike, TrainFolder, Mapping)):
        folders = [folders]
    specs = []
    for entry in folders:
        if isinstance(entry, str) and entry.lstrip().startswith("{"):  # a {path, ...} the CLI could not type
            try:
                parsed = yaml.safe_load(entry)
            except yaml.YAMLError:
                parsed = None
            entry = parsed if isinstance(parsed, Mapping) else entry
        if isinstance(entry, (str, os.PathLike)):
            spec = TrainFolder(str(entry))
        elif isinstance(entry, TrainFolder):
            spec = TrainFolder(entry.path, entry.crop, entry.limit)
        elif isinstance(entry, Mapping):
            unknown = set(entry) - {"path", "crop", "limit"}
            if unknown or "path" not in entry:
                raise DataError(f"A train_dirs entry needs `path` (and optionally `crop`, `limit`), got {dict(entry)}")
            spec = TrainFolder(str(entry["path"]), entry.get("crop"), entry.get("limit"))
        else:
            raise DataError(f"A train_dirs entry must be a folder or {{path, crop, limit}}, got {entry!r}")
        spec.crop = spec.crop or default_crop
        if spec.crop not in CROP_MODES:
            raise DataError(f"Training folder '{spec.path}': unknown crop mode '{spec.crop}'; use one of {CROP_MODES}")
        if spec.limit is not None and (isinstance(spec.limit, bool) or int(spec.limit) != spec.limit
                                       or spec.limit < 1):
            raise DataError(f"Training folder '{spec.path}': limit must be a positive integer, got {spec.limit!r}")
        specs.append(spec)
    return specs


def list_folder(spec: TrainFolder, recursive: bool = True) -> list[str]:
    """The image files of one folder in sorted path order, the first ``spec.limit`` of them."""
    return [str(p) for p in scan_images(spec.path, recursive)[: spec.limit]]


# ---------------------------------------------------------------------------------------------------- crop ops
def reflect_pad_to(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Reflect-pad (3, H, W) symmetrically to at least (height, width); repeats the reflection for tiny images."""
    while image.shape[-2] < height or image.shape[-1] < width:
        h, w = image.shape[-2:]
        ph, pw = max(height - h, 0), max(width - w, 0)
        mode = "reflect" if min(h, w) > 1 else "replicate"
        if mode == "reflect":  # one reflection adds at most (size - 1) pixels per side
            ph, pw = min(ph, 2 * (h - 1)), min(pw, 2 * (w - 1))
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)  # (left, right, top, bottom)
        image = F.pad(image[None], pad, mode=mode)[0]
    return image


def random_crop(image: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    """(3, H, W) -> (3, size, size), reflect padding first when the image is smaller than the crop."""
    image = reflect_pad_to(image, size, size)
    top = int(rng.integers(0, image.shape[-2] - size + 1))
    left = int(rng.integers(0, image.shape[-1] - size + 1))
    return image[:, top:top + size, left:left + size]


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) -> (3, size, size) from the centre, reflect padding first when needed (no resizing)."""
    image = reflect_pad_to(image, size, size)
    top, left = (image.shape[-2] - size) // 2, (image.shape[-1] - size) // 2
    return image[:, top:top + size, left:left + size]


def _pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(tensor_to_uint8(image))  # (3, H, W) [0, 1] -> RGB, 8 bit


def resize_to_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) -> (3, size, size): the whole image, Lanczos (OMGSR's FFHQ 1024 -> 512)."""
    if tuple(image.shape[-2:]) == (size, size):
        return image
    return uint8_to_tensor(np.asarray(_pil(image).resize((size, size), resample=Image.LANCZOS)))


def resize_center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) -> (3, size, size) as the released StrSR ``center_crop_arr``: box halving while the short side is
    >= 2 x size, bicubic to a short side of ``size`` (long side rounded), centre window."""
    pil = _pil(image)
    while min(pil.size) >= 2 * size:
        pil = pil.resize(tuple(s // 2 for s in pil.size), resample=Image.BOX)
    scale = size / min(pil.size)
    pil = pil.resize(tuple(round(s * scale) for s in pil.size), resample=Image.BICUBIC)
    array = np.asarray(pil)  # (H', W', 3), min(H', W') == size
    top, left = (array.shape[0] - size) // 2, (array.shape[1] - size) // 2
    return uint8_to_tensor(array[top:top + size, left:left + size])


def crop_image(image: torch.Tensor, size: int, mode: str, rng: np.random.Generator) -> torch.Tensor:
    """(3, H, W) -> (3, size, size) by ``mode`` (:data:`CROP_MODES`)."""
    if mode == "random":
        return random_crop(image, size, rng)
    if mode == "center":
        return resize_center_crop(image, size)
    if mode == "resize":
        return resize_to_square(image, size)
    raise DataError(f"unknown crop mode '{mode}'; use one of {CROP_MODES}")
