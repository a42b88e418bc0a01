"""Evaluation and predict batches carry their own scale: the modules restore at ``batch["scale"]`` (never asking the
DataModule), at their native scale when the batch has none, and a module that cannot produce the batch's scale
names both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from datamodules import EvalSet, SRDataModule
from lightning_modules.base import OneStepGANModule, batch_scale
from lightning_modules.stage2 import Stage2Module
from losses.adversarial import RaGAN
from losses.pixel import L1
from losses.weighted import WeightedLoss
from models.resize import bicubic_upsample


class _Generator(nn.Module):
    """Identity on the upsampled LQ (times a weight), so the output is exactly the module's bicubic upsampling."""

    adapter_name = None
    active_adapter = None

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))

    def forward(self, lq_up: torch.Tensor, lq: torch.Tensor | None = None) -> torch.Tensor:
        return lq_up * self.weight

    def trainable_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        yield "weight", self.weight


class _Discriminator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.heads = nn.ModuleList([nn.Linear(1, 1)])

    def trainable_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        yield from self.heads.named_parameters(prefix="heads")


class _Outputs(L.Callback):
    def __init__(self) -> None:
        self.val: list[tuple[int, tuple[int, ...], tuple[int, ...]]] = []
        self.predicted: list[tuple[int, ...]] = []

    def on_validation_batch_end(self, trainer: L.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        self.val.append((dataloader_idx, tuple(outputs["sr"].shape), tuple(batch["gt"].shape)))
        torch.testing.assert_close(outputs["sr"], bicubic_upsample(batch["lq"], int(batch["scale"][0])))

    def on_predict_batch_end(self, trainer: L.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int,
                             dataloader_idx: int = 0) -> None:
        self.predicted.append(tuple(outputs["sr"].shape))


def _module() -> OneStepGANModule:
    return OneStepGANModule(_Generator(), _Discriminator(), WeightedLoss({"l1": L1()}, {"l1": 1.0}), RaGAN())


def _trainer(callback: L.Callback) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=[callback], enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False)


def test_batch_scale_reads_ints_tensors_and_lists() -> None:
    assert batch_scale({"scale": 2}, default=4) == 2
    assert batch_scale({"scale": torch.tensor([8, 8])}, default=4) == 8  # collated by the DataLoader
    assert batch_scale({"scale": [3]}, default=4) == 3
    assert batch_scale({"lq": torch.zeros(1)}, default=4) == 4
    with pytest.raises(ValueError, match=r"mixes the scales \[2, 4\]"):
        batch_scale({"scale": torch.tensor([2, 4])}, default=4)


def test_eval_sets_are_restored_at_their_scale_and_predict_at_the_setting(tmp_path: Path) -> None:
    folder = tmp_path / "lq"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)).save(folder / "a.png")
    val = [EvalSet("x2", demo=True, scale=2, max_images=1), EvalSet("x4", demo=True, scale=4, max_images=1)]
    dm = SRDataModule(val_sets=val, predict_dir=str(folder), num_workers=0)
    module, outputs = _module(), _Outputs()
    trainer = _trainer(outputs)
    trainer.validate(module, datamodule=dm)
    # the demo GT is 256 x 256 for both sets: LQ 128 x 2 and LQ 64 x 4
    assert outputs.val == [(0, (1, 3, 256, 256), (1, 3, 256, 256)), (1, (1, 3, 256, 256), (1, 3, 256, 256))]
    trainer.predict(module, datamodule=dm)  # data.predict_scale: null -> the module's native x4
    trainer.predict(module, datamodule=SRDataModule(predict_dir=str(folder), num_workers=0, predict_scale=3))
    assert outputs.predicted == [(1, 3, 20, 28), (1, 3, 15, 21)]


def test_stage2_names_both_scales_when_it_cannot_produce_the_batch_scale() -> None:
    with pytest.raises(ValueError, match=r"asks for x3, but stage 2 produces x\(M\*N\) with N = 2"):
        Stage2Module.infer(SimpleNamespace(n=2), torch.rand(1, 3, 4, 4), 3)
