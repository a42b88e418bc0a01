"""Map-style datasets: HQ training crops (+ per-sample kernels), paired/LQ-only evaluation sets, the demo set.

Training randomness (crop, flip, kernels, replacement of a broken file) comes from one NumPy generator per item,
``np.random.default_rng([seed, epoch, position])``, where ``position`` is the item's place in the epoch's global
sample order (:class:`EpochSampler`). An item is therefore the same whatever the number of workers, and different
for every rank and worker because each position is drawn by exactly one of them. Plain integer indices (no sampler)
mean ``epoch = 0, position = index``.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from .crops import (
    CROP_MODES, TrainFolder, center_crop, crop_image, folder_specs, list_folder, random_crop, reflect_pad_to,
)
from .images import (
    DEFAULT_MAX_PIXELS, BadImageError, DataError, bundled_photo_tensors, check_image, image_size, load_image,
    scan_images,
)

__all__ = ["DemoEvalDataset", "EpochSampler", "HQImageDataset", "PairedImageDataset", "center_crop", "predict_dataset",
           "random_crop", "reflect_pad_to"]

SampleKey = tuple[int, int, int]  # (dataset index, epoch, global position in the epoch)
_MAX_RETRIES = 32


class HQImageDataset(Dataset):
    """High-quality training crops for the Real-ESRGAN pipeline (the per-sample part of BasicSR's
    ``RealESRGANDataset``, XPixelGroup/BasicSR ``basicsr/data/realesrgan_dataset.py``).

    Items: ``{"gt": (3, crop, crop) in [0, 1], "kernel1", "kernel2", "sinc_kernel": (21, 21) float32, "path": str}``
    (kernels only with a ``kernel_sampler``). ``folders`` is one folder, or a list of folders and
    :class:`~datamodules.crops.TrainFolder` entries (``{path, crop, limit}``: a crop mode and the first ``limit``
    images in sorted order per folder); a file listed by two folders is kept once, with the first folder's mode.
    ``crop`` is the mode of folders that name none (``random``, ``center`` or ``resize``,
    :mod:`datamodules.crops`). ``folders=None`` uses the photos bundled in scikit-image. A horizontal flip with p 0.5
    follows the crop when ``flip``. A file that cannot be decoded is skipped with one warning naming it (per
    process; workers are separate processes) and a random other image is returned in its place; the dataset fails
    only when no image at all can be read.
    """

    def __init__(
        self,
        folders: str | Sequence[str | TrainFolder | dict] | None = None,
        crop_size: int = 512,
        flip: bool = True,
        kernel_sampler: object | None = None,  # KernelSampler: (rng) -> dict of (21, 21) float32 arrays
        seed: int = 0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        recursive: bool = True,
        crop: str = "random",
    ) -> None:
        if crop_size < 1:
            raise DataError(f"crop_size must be positive, got {crop_size}")
        self.crop_size, self.flip, self.seed, self.max_pixels = crop_size, flip, seed, max_pixels
        self.kernel_sampler = kernel_sampler
        self._photos: list[torch.Tensor] | None = None
        specs = folder_specs(folders, crop)
        if specs:
            modes: dict[str, str] = {}
            for spec in specs:
                for path in list_folder(spec, recursive):
                    modes.setdefault(path, spec.crop)  # de-duplicated, first folder wins, order kept
            self.paths, self.crops = list(modes), list(modes.values())
        else:
            if crop not in CROP_MODES:
                raise DataError(f"unknown crop mode '{crop}'; use one of {CROP_MODES}")
            photos = bundled_photo_tensors()
            self.paths = [f"skimage.data/{name}" for name, _ in photos]
            self.crops = [crop] * len(self.paths)
            self._photos = [image for _, image in photos]
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, index: int) -> torch.Tensor:
        if self._photos is not None:
            return self._photos[index]
        return load_image(self.paths[index], self.max_pixels)

    def _skip(self, index: int, err: BadImageError) -> None:
        if index not in self._bad:
            self._bad.add(index)
            warnings.warn(f"Skipping unreadable training image: {err}", stacklevel=2)

    def __getitem__(self, key: int | SampleKey) -> dict[str, torch.Tensor | str]:
        index, epoch, position = (key, 0, key) if isinstance(key, int) else key
        rng = np.random.default_rng([self.seed, epoch, position])
        for _ in range(_MAX_RETRIES):
            try:
                image = self._load(index)  # (3, H, W)
                break
            except BadImageError as err:
                self._skip(index, err)
                good = [i for i in range(len(self)) if i not in self._bad]
                if not good:
                    raise DataError(f"None of the {len(self)} training images could be read") from err
                index = good[int(rng.integers(0, len(good)))]
        else:
            raise DataError(f"{_MAX_RETRIES} unreadable training images in a row; last: '{self.paths[index]}'")
        gt = crop_image(image, self.crop_size, self.crops[index], rng)  # (3, crop, crop)
        if self.flip and rng.random() < 0.5:
            gt = gt.flip(-1)
        item: dict[str, torch.Tensor | str] = {"gt": gt.contiguous(), "path": self.paths[index]}
        if self.kernel_sampler is not None:
            for name, kernel in self.kernel_sampler(rng).items():
                item[name] = torch.as_tensor(kernel, dtype=torch.float32)  # (21, 21)
        return item


class EpochSampler(DistributedSampler):
    """Training order for one rank: yields :data:`SampleKey` ``(index, epoch, position)``.

    The epoch's global order has ``total`` positions (``epoch_length`` drawn with replacement, or else concatenated
    permutations of the data set) rounded up to a multiple of ``num_replicas`` and to at least
    ``min_per_rank`` per rank; rank ``r`` takes positions ``r, r + R, ...``. The order is a function of
    (``seed``, epoch) alone, and its first positions do not depend on ``num_replicas``. It is a
    ``DistributedSampler``, so Lightning calls ``set_epoch`` on it and does not replace it under DDP.

    Resuming: :meth:`state_dict` (``consumed``: this rank's samples of the epoch that training has used, which the
    caller counts, since loader workers and prefetching draw ahead of it) and :meth:`load_state_dict` continue the
    epoch at the next position; ``len()`` stays the whole epoch's, so a resumed epoch yields only its remainder.
    """

    def __init__(
        self, dataset_size: int, epoch_length: int | None = None, num_replicas: int = 1, rank: int = 0,
        seed: int = 0, min_per_rank: int = 1,
    ) -> None:
        super().__init__(range(dataset_size), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.dataset_size, self.epoch_length = dataset_size, epoch_length
        base = max(epoch_length or dataset_size, min_per_rank * num_replicas)
        self.num_samples = math.ceil(base / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self._resume: tuple[int, int, int] | None = None  # (epoch, first position, samples consumed before it)

    def _start(self) -> tuple[int, int]:
        """(first global position, samples of the epoch consumed before it) of the current epoch on this rank."""
        if self._resume is not None and self._resume[0] == self.epoch:
            return self._resume[1], self._resume[2]
        return self.rank, 0

    def state_dict(self, consumed: int) -> dict[str, int]:
        """Position of this rank after training used ``consumed`` of its samples of the current epoch:
        ``{"epoch", "next": global position of the next sample, "consumed", "total_size", "seed",
        "dataset_size", "epoch_length"}`` (``epoch_length`` -1 for a pass over the data)."""
        start, before = self._start()
        return {"epoch": int(self.epoch), "next": start + (int(consumed) - before) * self.num_replicas,
                "consumed": int(consumed), "total_size": self.total_size, "seed": int(self.seed),
                "dataset_size": self.dataset_size,
                "epoch_length": -1 if self.epoch_length is None else self.epoch_length}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue epoch ``state["epoch"]`` at global position ``state["next"]`` (then ``+ num_replicas`` each
        sample); ``state["consumed"]`` is the count the training loop restores for that epoch. Other epochs start
        from their beginning. Sets the epoch, since a loader with workers draws its first indices when Lightning
        creates its iterator, before ``set_epoch``; a used-up epoch sets the next one, where Lightning goes on."""
        epoch, position = int(state["epoch"]), int(state["next"])
        if position >= self.total_size:
            self._resume = None
            self.set_epoch(epoch + 1)
        else:
            self._resume = (epoch, position, int(state["consumed"]))
            self.set_epoch(epoch)

    def __iter__(self) -> Iterator[SampleKey]:
        rng = np.random.default_rng([self.seed, self.epoch, 2**31 - 1])  # order stream, separate from item streams
        if self.epoch_length is not None:
            order = rng.integers(0, self.dataset_size, size=self.total_size)
        else:
            rounds = math.ceil(self.total_size / self.dataset_size)
            order = np.concatenate([rng.permutation(self.dataset_size) for _ in range(rounds)])
        for position in range(self._start()[0], self.total_size, self.num_replicas):
            yield int(order[position]), int(self.epoch), position

    def __len__(self) -> int:
        return self.num_samples


def _pair_key(path: Path, root: Path) -> str:
    return str(path.relative_to(root).with_suffix(""))


class PairedImageDataset(Dataset):
    """Evaluation set from an LQ folder and an optional GT folder, matched by relative path and file stem.

    An LQ stem may also carry a ``x{scale}`` suffix (DIV2K: ``0801x4.png`` <-> ``0801.png``). Items:
    ``{"lq": (3, h, w), "gt": (3, h*scale, w*scale) when gt_dir, "path": lq path, "name": stem, "scale": scale,
    "set": name}``: ``scale`` is the SR factor the set is evaluated at (``None``, LQ-only sets only: items carry
    none and the module uses its native scale); ``set`` is present when the set is named (``name``; messages
    otherwise name the folder). At construction every file is checked cheaply (:func:`check_image`): unreadable
    ones are dropped with one warning naming them; an LQ without its GT or a GT whose size is not LQ size x scale
    raises :class:`DataError` naming the files.
    """

    def __init__(
        self, lq_dir: str, gt_dir: str | None = None, scale: int | None = 4, name: str | None = None,
        max_images: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, recursive: bool = True,
    ) -> None:
        if scale is None and gt_dir is not None:
            raise DataError(f"Eval set '{name or Path(lq_dir).name}': a paired set needs its scale")
        self.scale, self.max_pixels = scale, max_pixels
        self.set_name = name
        self.name = name or Path(lq_dir).name
        lq_root = Path(lq_dir).expanduser()
        lq_files = scan_images(lq_root, recursive)[:max_images]
        gt_by_key: dict[str, Path] = {}
        if gt_dir is not None:
            gt_root = Path(gt_dir).expanduser()
            for path in scan_images(gt_root, recursive):
                key = _pair_key(path, gt_root)
                if key in gt_by_key:
                    raise DataError(f"Two GT files share the stem '{key}': '{gt_by_key[key]}' and '{path}'")
                gt_by_key[key] = path
        suffix = re.compile(rf"[xX]{scale}$")
        pairs: list[tuple[Path, Path | None]] = []
        missing: list[str] = []
        for lq in lq_files:
            gt = None
            if gt_dir is not None:
                key = _pair_key(lq, lq_root)
                gt = gt_by_key.get(key) or gt_by_key.get(suffix.sub("", key))
                if gt is None:
                    missing.append(str(lq))
            pairs.append((lq, gt))
        if missing:
            shown = ", ".join(f"'{m}'" for m in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise DataError(f"Eval set '{self.name}': LQ image(s) without a GT of the same stem in '{gt_dir}': {shown}")
        self.pairs = [pair for pair in pairs if self._usable(*pair)]
        if not self.pairs:
            raise DataError(f"Eval set '{self.name}': no readable images in '{lq_dir}'")

    def _usable(self, lq: Path, gt: Path | None) -> bool:
        for path in (lq, gt):
            if path is None:
                continue
            try:
                check_image(path, self.max_pixels)
            except BadImageError as err:
                warnings.warn(f"Eval set '{self.name}': skipping '{lq}': {err}", stacklevel=3)
                return False
        if gt is not None:
            self._check_sizes(lq, gt, image_size(lq, self.max_pixels), image_size(gt, self.max_pixels))
        return True

    def _check_sizes(self, lq: Path, gt: Path, lq_hw: Sequence[int], gt_hw: Sequence[int]) -> None:
        want = (lq_hw[0] * self.scale, lq_hw[1] * self.scale)
        if tuple(gt_hw) != want:
            raise DataError(
                f"Eval set '{self.name}': GT '{gt}' is {gt_hw[1]}x{gt_hw[0]} (WxH) but LQ '{lq}' is "
                f"{lq_hw[1]}x{lq_hw[0]}; with scale {self.scale} the GT must be {want[1]}x{want[0]}"
            )

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        lq_path, gt_path = self.pairs[index]
        item: dict[str, torch.Tensor | str | int] = {"lq": load_image(lq_path, self.max_pixels),
                                                     "path": str(lq_path), "name": lq_path.stem}
        if self.scale is not None:
            item["scale"] = self.scale
        if self.set_name is not None:
            item["set"] = self.set_name
        if gt_path is not None:
            gt = load_image(gt_path, self.max_pixels)  # (3, H, W)
            self._check_sizes(lq_path, gt_path, item["lq"].shape[-2:], gt.shape[-2:])
            item["gt"] = gt
        return item


class DemoEvalDataset(Dataset):
    """Deterministic paired test set: centre crops of the bundled photos degraded by the Real-ESRGAN pipeline.

    GT: ``size x size`` centre crop of each scikit-image photo; LQ: :class:`RealESRGANDegradation` (``preset``,
    seeded with ``seed``) with kernels from ``np.random.default_rng(seed)``. Same arguments, same tensors. Items:
    ``{"lq", "gt", "path", "name", "scale"}`` and ``"set": name`` when the set is named.
    """

    def __init__(self, scale: int = 4, size: int = 256, preset: str = "light", seed: int = 0,
                 name: str | None = None) -> None:
        from .degradation import KernelSampler, RealESRGANDegradation

        if size % scale:
            raise DataError(f"DemoEvalDataset: size {size} is not divisible by scale {scale}")
        self.scale, self.set_name = scale, name
        photos = bundled_photo_tensors()
        self.names = [photo for photo, _ in photos]
        self.gt = torch.stack([center_crop(image, size) for _, image in photos])  # (N, 3, size, size)
        degradation = RealESRGANDegradation(preset=preset, scale=scale, seed=seed)
        sampler = KernelSampler(degradation.config)
        rng = np.random.default_rng(seed)
        kernels = [sampler(rng) for _ in self.names]
        batch = {"gt": self.gt.clone()}
        for key in kernels[0]:
            batch[key] = torch.stack([torch.as_tensor(k[key], dtype=torch.float32) for k in kernels])
        with torch.no_grad():
            self.lq = degradation(batch)["lq"].float().clamp(0, 1)  # (N, 3, size/scale, size/scale)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str | int]:
        name = self.names[index]
        item = {"lq": self.lq[index], "gt": self.gt[index], "path": f"skimage.data/{name}", "name": name,
                "scale": self.scale}
        return item if self.set_name is None else {**item, "set": self.set_name}


def predict_dataset(folder: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS,
                    scale: int | None = None) -> PairedImageDataset:
    """LQ-only set for ``predict``: items ``{"lq", "path", "name"}`` (plus ``"scale"`` when ``scale`` is given;
    without it the module restores at its native scale); unreadable files dropped with a warning."""
    return PairedImageDataset(str(folder), gt_dir=None, scale=scale, max_pixels=max_pixels)
