"""SRDataModule: bundled photos offline, degradation in on_after_batch_transfer, setup errors, ranks, eval sets."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from PIL import Image

from datamodules import EvalSet, SRDataModule
from datamodules.degradation import RealESRGANDegradation
from datamodules.images import DataError


def _fake_trainer(training: bool = True, rank: int = 0, world: int = 2, testing: bool = False) -> SimpleNamespace:
    return SimpleNamespace(training=training, testing=testing, global_rank=rank, world_size=world)


def _save(path: Path, h: int, w: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def _light(scale: int = 4) -> RealESRGANDegradation:
    return RealESRGANDegradation(preset="light", scale=scale)


def test_bundled_photos_offline_and_degraded_train_batch() -> None:
    dm = SRDataModule(crop_size=64, batch_size=3, num_workers=0, degradation=_light(), seed=5)
    dm.trainer = _fake_trainer(world=1)
    dm.setup("fit")
    assert len(dm.train_dataset) == 8 and dm.degradation.seed == 5
    batch = next(iter(dm.train_dataloader()))
    assert batch["gt"].shape == (3, 3, 64, 64) and batch["kernel1"].shape == (3, 21, 21)
    assert all(p.startswith("skimage.data/") for p in batch["path"])
    out = dm.on_after_batch_transfer(batch, 0)
    assert out["lq"].shape == (3, 3, 16, 16) and out["lq"].dtype == torch.float32  # crop / scale
    assert out["gt"].shape == (3, 3, 64, 64) and out["path"] == batch["path"]
    assert 0.0 <= out["lq"].min().item() and out["lq"].max().item() <= 1.0
    dm.trainer = _fake_trainer(training=False)
    assert dm.on_after_batch_transfer(batch, 0) is batch  # no degradation outside training


def test_ranks_see_different_images_and_seed_their_degradation(tmp_path: Path) -> None:
    for i in range(6):
        _save(tmp_path / f"{i}.png", 24, 24, seed=i)
    paths = []
    for rank in (0, 1):
        dm = SRDataModule([str(tmp_path)], crop_size=16, batch_size=1, num_workers=0, degradation=_light(), seed=7)
        dm.trainer = _fake_trainer(rank=rank, world=2)
        dm.setup("fit")
        assert dm.degradation.seed == 7 + rank
        loader = dm.train_dataloader()
        assert len(loader) == 3
        paths.append({p for batch in loader for p in batch["path"]})
    assert not paths[0] & paths[1] and len(paths[0] | paths[1]) == 6


def test_epoch_length_samples_with_replacement() -> None:
    dm = SRDataModule(crop_size=32, batch_size=4, num_workers=0, degradation=_light(), epoch_length=20)
    dm.setup("fit")
    assert len(dm.train_dataloader()) == 5


def test_setup_errors_name_the_folder(tmp_path: Path) -> None:
    dm = SRDataModule([str(tmp_path / "missing_hq")], degradation=_light())
    with pytest.raises(DataError, match="missing_hq"):
        dm.setup("fit")
    (tmp_path / "empty_hq").mkdir()
    with pytest.raises(DataError, match="empty_hq"):
        SRDataModule([str(tmp_path / "empty_hq")], degradation=_light()).setup("fit")
    with pytest.raises(DataError, match="missing_lq"):
        SRDataModule(val_sets=[EvalSet("v", lq_dir=str(tmp_path / "missing_lq"))]).setup("validate")
    with pytest.raises(DataError, match="divisible"):
        SRDataModule(crop_size=30, degradation=_light()).setup("fit")
    with pytest.raises(DataError, match="unique"):
        SRDataModule(val_sets=[EvalSet("a", demo=True), EvalSet("a", demo=True)])
    with pytest.raises(DataError, match="predict_dir"):
        SRDataModule().setup("predict")


def test_eval_sets_and_predict(tmp_path: Path) -> None:
    for i in range(3):
        _save(tmp_path / "lq" / f"{i}.png", 4 + i, 5)
        _save(tmp_path / "gt" / f"{i}.png", 4 * (4 + i), 20)
    (tmp_path / "lq" / "broken.png").write_bytes(b"")
    val = [EvalSet("paired", str(tmp_path / "lq"), str(tmp_path / "gt"), max_images=2), EvalSet("demo", demo=True)]
    test = [EvalSet("lq_only", str(tmp_path / "lq"))]
    dm = SRDataModule(val_sets=val, test_sets=test, predict_dir=str(tmp_path / "lq"), num_workers=0)
    dm.setup("validate")
    assert dm.eval_set_names == ["paired", "demo"]
    loaders = dm.val_dataloader()
    assert isinstance(loaders, list) and len(loaders) == 2 and [len(l) for l in loaders] == [2, 8]
    batch = next(iter(loaders[0]))
    assert batch["lq"].shape == (1, 3, 4, 5) and batch["gt"].shape == (1, 3, 16, 20) and batch["name"] == ["0"]
    with pytest.warns(UserWarning, match="broken.png"):
        dm.setup("test")
    dm.trainer = _fake_trainer(training=False, testing=True)
    assert dm.eval_set_names == ["lq_only"] and len(dm.test_dataloader()[0]) == 3
    with pytest.warns(UserWarning, match="broken.png"):
        dm.setup("predict")
    items = list(dm.predict_dataloader())
    assert [b["name"] for b in items] == [["0"], ["1"], ["2"]] and "gt" not in items[0]


class _Recorder(LightningModule):
    """Tiny real module: one weight, records what the Trainer feeds it."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.train_shapes: list[tuple[int, ...]] = []
        self.val_batches: list[tuple[int, tuple[int, ...], bool]] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.train_shapes.append(tuple(batch["lq"].shape))
        return ((self.weight * batch["lq"].mean() - batch["gt"].mean()) ** 2)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.val_batches.append((dataloader_idx, tuple(batch["lq"].shape), "kernel1" in batch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_tiny_trainer_loop_degrades_only_training_batches() -> None:
    dm = SRDataModule(crop_size=32, batch_size=2, num_workers=0, degradation=_light(),
                      val_sets=[EvalSet("demo", demo=True)])
    model = _Recorder()
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=2, limit_val_batches=2, num_sanity_val_steps=0,
                      val_check_interval=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    assert model.train_shapes == [(2, 3, 8, 8), (2, 3, 8, 8)]
    assert model.val_batches == [(0, (1, 3, 64, 64), False), (0, (1, 3, 64, 64), False)]


def test_eval_and_predict_items_carry_their_scale(tmp_path: Path) -> None:
    for i in range(2):
        _save(tmp_path / "lq" / f"{i}.png", 4, 5)
        _save(tmp_path / "gt" / f"{i}.png", 8, 10)
    val = [EvalSet("paired_x2", str(tmp_path / "lq"), str(tmp_path / "gt"), scale=2),
           EvalSet("lq_x8", str(tmp_path / "lq"), scale=8), EvalSet("demo_x4", demo=True, max_images=1)]
    dm = SRDataModule(val_sets=val, predict_dir=str(tmp_path / "lq"), num_workers=0)
    dm.setup("validate")
    batches = [next(iter(loader)) for loader in dm.val_dataloader()]
    assert [b["scale"].tolist() for b in batches] == [[2], [8], [4]]  # each set's own scale, collated per batch
    assert [b["set"] for b in batches] == [["paired_x2"], ["lq_x8"], ["demo_x4"]]
    dm.setup("predict")
    assert "scale" not in next(iter(dm.predict_dataloader()))  # predict_scale: null -> the module's native scale
    dm = SRDataModule(predict_dir=str(tmp_path / "lq"), num_workers=0, predict_scale=3)
    dm.setup("predict")
    assert next(iter(dm.predict_dataloader()))["scale"].tolist() == [3]
    with pytest.raises(DataError, match="predict_scale"):
        SRDataModule(predict_scale=0)
