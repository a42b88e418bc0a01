"""The LightningDataModule: HQ folders (or the bundled photos) for training, paired/LQ-only folders for evaluation.

The Real-ESRGAN degradation runs batched on the batch's device in ``on_after_batch_transfer`` (training only), as a
seedable batch transform (DESIGN.md, "Data"). Every argument is YAML friendly (LightningCLI ``data:`` section).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import Subset, DataLoader, Dataset

from .crops import CropMode, TrainFolder
from .datasets import DemoEvalDataset, EpochSampler, HQImageDataset, PairedImageDataset, predict_dataset
from .degradation import KernelSampler, RealESRGANDegradation
from .feature_cache import CachedFeatureDataset, collate_features, open_cache
from .images import DEFAULT_MAX_PIXELS, DataError
from .resume_state import (
    degradation_state_dict, load_degradation_state_dict, load_sampler_state_dict, sampler_state_dict,
)


@dataclass
class EvalSet:
    """One validation/test set: a paired (``lq_dir`` + ``gt_dir``) or LQ-only (``lq_dir``) folder, or the demo set.

    ``demo=True`` ignores the folders and uses :class:`DemoEvalDataset` (bundled photos degraded with the ``light``
    preset, seeded by the DataModule's ``seed``). ``max_images`` keeps the first N LQ files in sorted order. Every
    item carries ``scale`` (the factor the set is evaluated at) and ``set`` (``name``).

    Args:
        name: the set's name in logs, tables and folders (``val/<name>/psnr``, ``eval/val/<name>/``).
        lq_dir: folder of LQ images (ignored with ``demo``).
        gt_dir: folder of GT images with the same file stems as ``lq_dir``; ``null`` for an LQ-only set
            (no-reference metrics only).
        scale: the SR factor the set is evaluated at (GT = LQ x scale).
        demo: use the bundled photos degraded deterministically instead of folders.
        max_images: keep only the first N LQ images (sorted by name); ``null``: all.
    """

    name: str
    lq_dir: str | None = None
    gt_dir: str | None = None
    scale: int = 4
    demo: bool = False
    max_images: int | None = None


class SRDataModule(LightningDataModule):
    """Training crops + Real-ESRGAN degradation (Wang et al. 2021), evaluation sets, a predict folder.

    - Training: HQ images from ``train_dirs`` (recursive; ``None`` -> the photos bundled in scikit-image): one
      folder, or a list of folders and :class:`~datamodules.crops.TrainFolder` entries
      (``{path: data/FFHQ, crop: resize, limit: 10000}``: the folder's crop mode and its first ``limit`` images in
      sorted order). ``crop`` is the mode of folders that name none: ``random`` ``crop_size`` windows (reflect
      padding for small images), ``center`` (short side resized to ``crop_size`` as the released StrSR
      ``center_crop_arr``, centre window) or ``resize`` (whole image Lanczos-resized, FFHQ as OMGSR); then a
      horizontal flip with p 0.5 when ``flip``, and per-sample kernels. Each rank draws
      different positions of one global epoch order (:class:`EpochSampler`, a ``DistributedSampler`` Lightning keeps);
      ``epoch_length`` sets the samples per epoch (drawn with replacement), else one pass over the images (at least
      one batch per rank). Batches are degraded in :meth:`on_after_batch_transfer` by ``degradation`` (default:
      ``RealESRGANDegradation()``, the ``realesrgan`` preset at x4) in fp32, seeded ``seed + global_rank``.
      With ``feature_cache`` (a directory written by ``python -m datamodules.precompute``) every training item also
      carries ``cond_features`` (L, D), the cached VLM features of its ``path`` read by the loader workers, so a
      batch carries (B, L, D) and the DiT module never runs (or loads) the VLM.
    - Validation / test: one dataloader per :class:`EvalSet`, batch size 1 (sizes differ), names in
      :attr:`eval_set_names` (the test names while testing, else the validation names). Items carry their set's
      ``scale`` and name (``set``).
    - Predict: LQ images of ``predict_dir``; unreadable files are dropped with a warning. Items carry
      ``scale = predict_scale`` when it is set; ``None`` (default) lets the module restore at its native scale
      (``TUDSRInference``: its pipeline's M x N; the training modules: x4).

    Folders are validated in :meth:`setup`: a missing or empty folder raises :class:`DataError` naming it.

    Args:
        train_dirs: folders of HQ training images (searched recursively): one folder, a list of folders, or
            ``{path, crop, limit}`` entries; ``null`` trains on the photos bundled with scikit-image.
        crop_size: side of the square HQ training crops, in pixels (a multiple of the degradation scale).
        batch_size: training images per batch (evaluation batches hold one image).
        num_workers: data-loading worker processes (0: load in the main process).
        degradation: the LQ synthesis applied to every training batch (default: Real-ESRGAN at x4).
        val_sets: validation sets (paired or LQ-only folders, or the demo set), one dataloader each.
        test_sets: test sets for ``main.py test``, same form as ``val_sets``.
        predict_dir: folder of LQ images that ``main.py predict`` upscales.
        seed: seed of the crops, flips, kernels and degradation noise (each rank adds its rank).
        epoch_length: training samples per epoch, drawn with replacement; ``null``: one pass over the images.
        flip: random horizontal flip of training crops.
        max_pixels: images larger than this many pixels are refused (a memory guard).
        feature_cache: folder of precomputed VLM features (``python -m datamodules.precompute``) for StrSR.
        predict_scale: the factor predict batches ask for; ``null``: the model's native factor.
        crop: how training images become ``crop_size`` squares for folders that name no mode: ``random``,
            ``center`` or ``resize``.
    """

    def __init__(
        self,
        train_dirs: list[str | TrainFolder] | TrainFolder | str | None = None,
        crop_size: int = 512,
        batch_size: int = 1,
        num_workers: int = 2,
        degradation: RealESRGANDegradation | None = None,
        val_sets: list[EvalSet] | None = None,
        test_sets: list[EvalSet] | None = None,
        predict_dir: str | None = None,
        seed: int = 0,
        epoch_length: int | None = None,
        flip: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        feature_cache: str | None = None,
        predict_scale: int | None = None,
        crop: CropMode = "random",
    ) -> None:
        super().__init__()
        self.train_dirs, self.crop_size, self.batch_size, self.crop = train_dirs, crop_size, batch_size, crop
        self.num_workers, self.seed, self.epoch_length, self.flip = num_workers, seed, epoch_length, flip
        self.max_pixels, self.predict_dir = max_pixels, predict_dir
        self.feature_cache, self.predict_scale = feature_cache, predict_scale
        if predict_scale is not None and predict_scale < 1:
            raise DataError(f"predict_scale must be a positive integer, got {predict_scale}")
        self.degradation = degradation if degradation is not None else RealESRGANDegradation()
        self.val_sets, self.test_sets = list(val_sets or []), list(test_sets or [])
        for sets in (self.val_sets, self.test_sets):
            names = [s.name for s in sets]
            if len(set(names)) != len(names):
                raise DataError(f"Eval set names must be unique, got {names}")
        self.train_dataset: HQImageDataset | CachedFeatureDataset | None = None
        self.val_datasets: list[Dataset] = []
        self.test_datasets: list[Dataset] = []
        self.predict_dataset: Dataset | None = None
        self._train_sampler: EpochSampler | None = None
        self._sampler_state: dict[str, Any] | None = None  # from a checkpoint, applied to the next train sampler

    @property
    def scale(self) -> int:
        """Super-resolution factor of the training degradation."""
        return int(getattr(self.degradation, "scale", 4))

    @property
    def val_set_names(self) -> list[str]:
        return [s.name for s in self.val_sets]

    @property
    def test_set_names(self) -> list[str]:
        return [s.name for s in self.test_sets]

    @property
    def eval_set_names(self) -> list[str]:
        """Names of the current evaluation dataloaders, indexed by ``dataloader_idx``."""
        testing = self.trainer is not None and self.trainer.testing
        return self.test_set_names if testing else self.val_set_names

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: each rank's degradation random stream (and a small pair pool) and, while
        fitting, each rank's position in the epoch (``"sampler"``), so a resumed run continues at the next sample
        and the next random draws instead of replaying or skipping any (see :mod:`datamodules.resume_state`)."""
        rank, world = self._rank_and_world()
        step = int(self.trainer.global_step) if self.trainer is not None else 0
        state = degradation_state_dict(self.degradation, rank, world, step)
        if self._train_sampler is not None and self.trainer is not None and self.trainer.state.fn == "fit":
            # one dataloader batch per training_step in every module (chunks and accumulation split or group
            # those batches inside the module), so the loop's batch count x batch size is the samples used
            batches = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
            state["sampler"] = sampler_state_dict(self._train_sampler, batches * self.batch_size, world)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        rank, world = self._rank_and_world()
        if "ranks" in state_dict:
            device = self.trainer.strategy.root_device if self.trainer is not None else None
            load_degradation_state_dict(self.degradation, state_dict, rank, world, device=device)
        if "sampler" in state_dict:
            self._sampler_state = state_dict["sampler"]
            if self._train_sampler is not None:
                load_sampler_state_dict(self._train_sampler, self._sampler_state, rank, world)
            # Lightning warns about any mid-epoch resume of a loader without `state_dict`; this one is resumed
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")

    def _rank_and_world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return int(self.trainer.global_rank), int(self.trainer.world_size)

    def _build_eval(self, spec: EvalSet) -> Dataset:
        if spec.demo:
            demo = DemoEvalDataset(scale=spec.scale, preset="light", seed=self.seed, name=spec.name)
            return demo if spec.max_images is None else Subset(demo, range(min(spec.max_images, len(demo))))
        if spec.lq_dir is None:
            raise DataError(f"Eval set '{spec.name}' needs lq_dir (or demo: true)")
        return PairedImageDataset(spec.lq_dir, spec.gt_dir, scale=spec.scale, name=spec.name,
                                  max_images=spec.max_images, max_pixels=self.max_pixels)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            if self.crop_size % self.scale:
                raise DataError(f"crop_size {self.crop_size} must be divisible by the degradation scale {self.scale}")
            try:
                self.train_dataset = HQImageDataset(
                    self.train_dirs, crop_size=self.crop_size, flip=self.flip, crop=self.crop,
                    kernel_sampler=KernelSampler(self.degradation.config), seed=self.seed,
                    max_pixels=self.max_pixels,
                )
            except DataError as err:  # name the option the user sets
                raise DataError(f"data.train_dirs: {err}") from None
            if self.feature_cache is not None:
                cache, _ = open_cache(self.feature_cache)  # the manifest's tag keys the entries
                self.train_dataset = CachedFeatureDataset(self.train_dataset, cache)
            self.degradation.set_seed(self.seed + self._rank_and_world()[0])
        if stage in (None, "fit", "validate"):
            self.val_datasets = [self._build_eval(s) for s in self.val_sets]
        if stage in (None, "test"):
            self.test_datasets = [self._build_eval(s) for s in self.test_sets]
        if stage in (None, "predict"):
            if self.predict_dir is None:
                if stage == "predict":
                    raise DataError("predict needs `data.predict_dir`: a folder of LQ images")
            else:
                self.predict_dataset = predict_dataset(self.predict_dir, self.max_pixels, self.predict_scale)

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        return DataLoader(dataset, num_workers=self.num_workers, pin_memory=torch.cuda.is_available(),
                          persistent_workers=self.num_workers > 0, **kwargs)

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            self.setup("fit")
        rank, world = self._rank_and_world()
        sampler = EpochSampler(len(self.train_dataset), self.epoch_length, num_replicas=world, rank=rank,
                               seed=self.seed, min_per_rank=self.batch_size)
        if self._sampler_state is not None:
            load_sampler_state_dict(sampler, self._sampler_state, rank, world)
        self._train_sampler = sampler
        collate = collate_features if isinstance(self.train_dataset, CachedFeatureDataset) else None
        return self._loader(self.train_dataset, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                            collate_fn=collate)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(ds, batch_size=1, shuffle=False) for ds in self.val_datasets]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(ds, batch_size=1, shuffle=False) for ds in self.test_datasets]

    def predict_dataloader(self) -> DataLoader:
        if self.predict_dataset is None:
            self.setup("predict")
        return self._loader(self.predict_dataset, batch_size=1, shuffle=False)

    def degrade(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Apply the degradation in fp32 on the device of ``batch["gt"]``; returns the degraded batch."""
        device = batch["gt"].device
        self.degradation.to(device)
        with torch.autocast(device_type=device.type, enabled=False):
            fp32 = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in batch.items()}
            with torch.no_grad():
                out = self.degradation(fp32)
        return {**{k: v for k, v in batch.items() if not torch.is_tensor(v)}, **out}

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is not None and self.trainer.training and isinstance(batch, dict) and "gt" in batch:
            return self.degrade(batch)
        return batch
