"""EvaluationCallback driven by a tiny Trainer: per-set aggregation equals the mean of the per-image CSV, skipped
metrics carry their reason, LQ-only sets, logged keys and images, default set names; on test, the paper report (our
values = the CSV means, beside the paper's row and the difference) and the contact sheet."""

from __future__ import annotations

import csv
import json
import math

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, Dataset

from callbacks.evaluation import EvaluationCallback
from evaluation import quantize_8bit


class _Images(Dataset):
    """Fixed (lq, sr, gt) triples; the "model" returns ``sr`` as its output. Items name their set and scale when
    given (as the SRDataModule's evaluation sets do)."""

    def __init__(self, n: int, size: int, seed: int, paired: bool, name: str | None = None,
                 scale: int | None = None) -> None:
        g = torch.Generator().manual_seed(seed)
        self.gt = torch.rand(n, 3, size, size, generator=g)
        self.sr = (self.gt + 0.1 * torch.randn(self.gt.shape, generator=g)).clamp(0, 1)
        self.seed, self.paired, self.name, self.scale = seed, paired, name, scale

    def __len__(self) -> int:
        return self.gt.shape[0]

    def __getitem__(self, i: int) -> dict:
        item = {"lq": self.sr[i, :, ::2, ::2], "sr": self.sr[i], "name": f"img{self.seed}_{i}.png"}
        item |= {} if self.name is None else {"set": self.name, "scale": self.scale}
        return {**item, "gt": self.gt[i]} if self.paired else item


class _Data(L.LightningDataModule):
    def _loaders(self) -> list[DataLoader]:
        return [DataLoader(_Images(5, 24, 0, True, "paired", 2), batch_size=2),
                DataLoader(_Images(2, 24, 1, False, "lq_only", 4), batch_size=2)]

    def test_dataloader(self) -> list[DataLoader]:
        return self._loaders()

    def val_dataloader(self) -> list[DataLoader]:
        return self._loaders()


class _Model(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def _step(self, batch: dict) -> dict:
        return {"sr": batch["sr"], "gt": batch.get("gt"), "lq": batch["lq"], "name": batch["name"]}

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        return self._step(batch)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        return self._step(batch)


def _trainer(tmp_path, callback: EvaluationCallback) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=TensorBoardLogger(str(tmp_path), name="tb"),
                     callbacks=[callback], enable_progress_bar=False, enable_checkpointing=False,
                     enable_model_summary=False)


def _read_csv(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_test_stage_writes_csv_summaries_and_logs_the_csv_means(tmp_path, capsys) -> None:
    missing = str(tmp_path / "missing_vgg16.pth")
    callback = EvaluationCallback(metrics=["psnr_y_basicsr", "ssim_y_basicsr", "psnr_rgb", "lpips_vgg"], weights={"vgg16": missing},
                                  out_dir=str(tmp_path / "eval"), log_images=3)
    trainer = _trainer(tmp_path, callback)
    trainer.test(_Model(), datamodule=_Data())

    rows = _read_csv(tmp_path / "eval" / "test" / "paired" / "per_image.csv")
    assert [r["name"] for r in rows] == [f"img0_{i}.png" for i in range(5)]
    assert list(rows[0]) == ["name", "psnr_y_basicsr", "ssim_y_basicsr", "psnr_rgb"]
    summary = json.loads((tmp_path / "eval" / "test" / "paired" / "summary.json").read_text())
    assert summary["num_images"] == 5 and summary["crop_border"] == 2 and summary["scale"] == 2
    for metric in ("psnr_y_basicsr", "ssim_y_basicsr", "psnr_rgb"):
        csv_mean = math.fsum(float(r[metric]) for r in rows) / len(rows)
        assert summary["metrics"][metric] == pytest.approx(csv_mean, rel=1e-12)
        assert trainer.callback_metrics[f"test/paired/{metric}"].item() == pytest.approx(csv_mean, rel=1e-6)
    # independent check of one CSV value: PSNR (Y, border 2) of the quantised first image
    data = _Images(5, 24, 0, True)
    sr, gt = quantize_8bit(data.sr[:1]).double(), quantize_8bit(data.gt[:1]).double()
    w = torch.tensor([65.481, 128.553, 24.966], dtype=torch.float64).view(1, 3, 1, 1)
    ys, yg = [((16 + (x * w).sum(1)) / 255)[:, 2:-2, 2:-2] for x in (sr, gt)]
    assert float(rows[0]["psnr_y_basicsr"]) == pytest.approx(-10 * math.log10(((ys - yg) ** 2).mean().item()), rel=1e-10)

    assert missing in summary["skipped"]["lpips_vgg"]
    md = (tmp_path / "eval" / "test" / "paired" / "summary.md").read_text()
    assert "| psnr_y_basicsr ↑ | ssim_y_basicsr ↑ | psnr_rgb ↑ | lpips_vgg |" in md  # the skipped metric keeps its column ...
    assert md.splitlines()[6].endswith(" | - |") and missing in md  # ... with "-" and the reason below

    lq = json.loads((tmp_path / "eval" / "test" / "lq_only" / "summary.json").read_text())
    assert lq["metrics"] == {} and lq["skipped"]["psnr_y_basicsr"] == "no ground truth in this set"
    assert [r["name"] for r in _read_csv(tmp_path / "eval" / "test" / "lq_only" / "per_image.csv")] == \
        ["img1_0.png", "img1_1.png"]
    overview = json.loads((tmp_path / "eval" / "test" / "summary.json").read_text())
    assert set(overview) == {"paired", "lq_only"}
    assert "test/lq_only/psnr_y_basicsr" not in trainer.callback_metrics

    out = capsys.readouterr().out
    assert "| paired | 5 |" in out and "lq_only: psnr_y_basicsr skipped: no ground truth" in out

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(trainer.logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()["images"]
    assert {"test/paired/images/0", "test/paired/images/2", "test/lq_only/images/1"} <= set(tags)
    assert "test/paired/images/3" not in tags


def test_validation_without_set_names_falls_back_to_set_idx_and_scale_4(tmp_path) -> None:
    callback = EvaluationCallback(metrics=["psnr_y_basicsr"], log_images=0)
    trainer = _trainer(tmp_path, callback)
    loaders = [DataLoader(_Images(3, 24, 2, True), batch_size=3)]
    trainer.validate(_Model(), dataloaders=loaders)
    result = callback.results["val"]["set0"]
    assert result["crop_border"] == 4 and result["num_images"] == 3
    rows = _read_csv(tmp_path / "tb" / "version_0" / "eval" / "val" / "set0" / "per_image.csv")
    assert result["metrics"]["psnr_y_basicsr"] == pytest.approx(math.fsum(float(r["psnr_y_basicsr"]) for r in rows) / 3,
                                                       rel=1e-12)
    assert trainer.callback_metrics["val/set0/psnr_y_basicsr"].item() == pytest.approx(result["metrics"]["psnr_y_basicsr"],
                                                                                rel=1e-6)


def test_a_step_that_breaks_the_contract_fails_clearly(tmp_path) -> None:
    class Bad(_Model):
        def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
            return None

    trainer = _trainer(tmp_path, EvaluationCallback(metrics=["psnr_y_basicsr"], out_dir=str(tmp_path)))
    with pytest.raises(TypeError, match="must return a dict with 'sr'"):
        trainer.test(Bad(), dataloaders=[DataLoader(_Images(1, 24, 0, True))])


def test_test_writes_the_paper_report_and_the_contact_sheet(tmp_path) -> None:
    from PIL import Image

    callback = EvaluationCallback(metrics=["psnr_rgb", "ssim_y_pyiqa", "psnr_y_basicsr"], out_dir=str(tmp_path / "eval"),
                                  log_images=0, paper_method="StrSR-F", paper_names={"realsr_small": "RealSR"},
                                  contact_sheet=2)
    trainer = _trainer(tmp_path, callback)
    loaders = [DataLoader(_Images(3, 24, 5, True, "realsr_small", 4), batch_size=2),
               DataLoader(_Images(2, 24, 6, False, "unknown_set", 4), batch_size=2)]
    trainer.test(_Model(), dataloaders=loaders)
    folder = tmp_path / "eval" / "test" / "realsr_small"
    rows = _read_csv(folder / "per_image.csv")
    report = json.loads((folder / "report.json").read_text())
    assert report["method"] == "StrSR-F" and report["paper_dataset"] == "RealSR" and report["scale"] == 4
    (table,) = report["tables"]
    assert table["source"] == "StrSR Table 2, row StrSR - F, RealSR, x4"
    lines = {(r["column"], r["metric"]): r for r in table["rows"]}
    for column, metric, paper in (("PSNR", "psnr_rgb", 23.77), ("SSIM", "ssim_y_pyiqa", 0.7236),
                                  ("PSNR", "psnr_y_basicsr", 23.77)):
        csv_mean = math.fsum(float(r[metric]) for r in rows) / len(rows)
        line = lines[(column, metric)]
        assert line["ours"] == pytest.approx(csv_mean, rel=1e-12) and line["paper"] == paper
        assert line["diff"] == pytest.approx(csv_mean - paper, rel=1e-12)
    assert lines[("PSNR", "psnr_rgb")]["main"] and not lines[("PSNR", "psnr_y_basicsr")]["main"]
    assert lines[("LPIPS", "lpips_alex")]["ours"] is None and lines[("LPIPS", "lpips_alex")]["paper"] == 0.2599
    assert [r["column"] for r in table["rows"] if r["main"]] == \
        ["PSNR", "SSIM", "LPIPS", "DISTS", "NIQE", "MAN.", "MUS.", "QAli.", "Qual."]  # the paper's column order
    md = (folder / "report.md").read_text()
    psnr = lines[("PSNR", "psnr_rgb")]
    assert f"| PSNR ↑ (`psnr_rgb`) | {psnr['ours']:.2f} | 23.77 | {psnr['diff']:+.2f} |" in md
    assert "| LPIPS ↓ (`lpips_alex`) | - | 0.2599 | - |" in md
    other = json.loads((tmp_path / "eval" / "test" / "unknown_set" / "report.json").read_text())
    assert other["tables"] == []
    assert "hold no StrSR-F row for unknown_set at x4" in (tmp_path / "eval" / "test" / "report.md").read_text()

    sheet = Image.open(folder / "contact_sheet.png")
    assert sheet.size == (3 * 24 + 2 * 4, 2 * 24 + 4) and sheet.mode == "RGB"  # 2 rows of LQ | ours | GT
    pixels = torch.from_numpy(np.array(sheet)).permute(2, 0, 1)
    expected_sr = quantize_8bit(_Images(3, 24, 5, True).sr[0]) * 255
    assert (pixels[:, :24, 28:52].float() - expected_sr).abs().max() <= 1  # the middle panel is ours
    assert {folder / "report.md", folder / "report.json", folder / "contact_sheet.png",
            folder / "per_image.csv", tmp_path / "eval" / "test" / "report.md"} <= set(callback.written)
    assert len(set(callback.written)) == len(callback.written) and all(p.is_file() for p in callback.written)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(trainer.logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert "test/realsr_small/contact_sheet" in events.Tags()["images"]


def test_an_unknown_paper_method_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="StrSR-F"):
        EvaluationCallback(paper_method="TUDSR")
