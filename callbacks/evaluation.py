"""Evaluation on validation and test: image-quality metrics over whole sets, TensorBoard logs, CSV and summaries.

Contract with the LightningModule: ``validation_step`` / ``test_step(batch, batch_idx, dataloader_idx=0)`` return
``{"sr": (B, 3, H, W) in [0, 1], "gt": Tensor | None, "lq": Tensor, "name": list[str]}``. Contract with the data:
each batch names its set (``batch["set"]``, else ``set{idx}``) and carries its scale (``batch["scale"]``, else 4),
as the ``SRDataModule`` evaluation sets do; the callback never asks the DataModule.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist

from callbacks.image_logger import side_by_side
from callbacks.outputs import run_folder
from evaluation.collection import MetricCollection
from evaluation.contact_sheet import contact_row, contact_sheet, save_png
from evaluation.paper import PaperValues
from evaluation.report import build_report, report_markdown
from lightning_modules.sr_steps import batch_scale

__all__ = ["DEFAULT_METRICS", "EvaluationCallback", "format_table"]

# Every column of both papers' tables (TUDSR Tables 1/2/4/5, StrSR Tables 1-3), PSNR/SSIM in both conventions.
DEFAULT_METRICS = ["psnr_y_basicsr", "ssim_y_basicsr", "psnr_y_pyiqa", "ssim_y_pyiqa", "psnr_rgb", "lpips_alex",
                   "lpips_vgg", "dists", "fid", "clipiqa", "clipiqa+", "nima", "niqe", "liqe", "musiq", "maniqa",
                   "qalign", "qualiclip"]


def _fmt(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else str(value)


def format_table(results: dict[str, dict[str, Any]], names: list[str]) -> str:
    """Markdown table, one row per dataset (``results[dataset]["metrics"]``), one column per metric in ``names``;
    ``-`` where a metric was skipped (the reasons are listed under the table). Arrows give the better direction."""
    arrows: dict[str, str] = {}
    for summary in results.values():
        arrows.update({k: " ↑" if v else " ↓" for k, v in summary.get("higher_is_better", {}).items()})
    lines = ["| dataset | images | " + " | ".join(f"{c}{arrows.get(c, '')}" for c in names) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in names) + " |"]
    for dataset, summary in results.items():
        values = summary["metrics"]
        cells = [_fmt(values[c]) if c in values else "-" for c in names]
        lines.append(f"| {dataset} | {summary['num_images']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


class EvaluationCallback(L.Callback):
    """Score every validation/test set with :class:`evaluation.MetricCollection` and report it.

    Per dataloader it accumulates per-image rows over the whole set (and FID's set statistics); at epoch end it
    gathers the rows of all ranks, logs ``val/<dataset>/<metric>`` or ``test/<dataset>/<metric>``, and rank 0
    writes ``<out_dir>/<stage>/<dataset>/per_image.csv``, ``summary.md`` and ``summary.json`` (skipped metrics with
    their reason) plus ``<out_dir>/<stage>/summary.md|json`` over all sets; the test table is printed. The first
    ``log_images`` images of each set go to TensorBoard as LQ | SR | GT. Metric networks live here, never in the
    LightningModule, so they stay out of optimizers and checkpoints. Sanity-check validation is not scored.

    On test it also writes, per set, ``report.md`` / ``report.json`` (our values beside the papers' rows of
    ``paper_method`` on that set at its scale, :mod:`evaluation.report`; ``<out_dir>/test/report.md`` joins them)
    and ``contact_sheet.png`` (LQ | ours | GT of the first ``contact_sheet`` images, also logged to TensorBoard).
    :attr:`written` lists every file written in this run (each once, newest last).

    Args:
        metrics: metric names (see :data:`evaluation.METRICS`).
        weights: weight files by key (``vgg16``, ``alexnet``, ``dists``, ``fid``, ``clipiqa``, ``clipiqa+``, ``nima``,
            ``liqe``, ``musiq``, ``maniqa``, ``niqe``, ``qualiclip``; ``qalign``: a snapshot folder); others come from
            the ``$TORCH_HOME/hub`` caches (README "Evaluation").
        crop_border: PSNR/SSIM border crop; None = each set's scale (``batch["scale"]``).
        log_images: images per set logged to TensorBoard.
        out_dir: where the CSV/summaries go; None = ``<trainer.log_dir>/eval``.
        quantize: score 8-bit-rounded images (as saved PNGs).
        paper_method: the papers' method to compare with in ``report.md`` (``TUDSR-S``, ``TUDSR-S M4``, ...,
            ``StrSR-F``, ``StrSR-Z``; see ``evaluation/paper_values.yaml``); None: no comparison.
        paper_names: set name -> the papers' data set name, for sets named otherwise (default: the set's name).
        paper_values: another paper-values file (default ``evaluation/paper_values.yaml``).
        contact_sheet: images per set on the test contact sheet (0: none).
        contact_size: longest side of each contact-sheet panel, in pixels.
    """

    def __init__(self, metrics: list[str] | None = None, weights: dict[str, str] | None = None,
                 crop_border: int | None = None, log_images: int = 4, out_dir: str | None = None,
                 quantize: bool = True, paper_method: str | None = None, paper_names: dict[str, str] | None = None,
                 paper_values: str | None = None, contact_sheet: int = 4, contact_size: int = 384) -> None:
        super().__init__()
        self.metric_names = list(DEFAULT_METRICS if metrics is None else metrics)
        self.weights, self.crop_border, self.log_images = dict(weights or {}), crop_border, log_images
        self.out_dir, self.quantize = out_dir, quantize
        self.paper = PaperValues.load(paper_values)
        if paper_method is not None and paper_method not in self.paper.methods:
            raise ValueError(f"paper_method '{paper_method}' is not in the paper values; choose from "
                             f"{self.paper.methods}")
        self.paper_method, self.paper_names = paper_method, dict(paper_names or {})
        self.contact_sheet, self.contact_size = int(contact_sheet), int(contact_size)
        self.written: list[Path] = []  # every file written in this run, each once, newest last
        self._rows: dict[int, list[torch.Tensor]] = {}  # dataloader_idx -> contact-sheet rows (test, rank 0)
        self.results: dict[str, dict[str, dict[str, Any]]] = {}  # stage -> dataset -> summary
        self._base: MetricCollection | None = None
        self._sets: dict[int, MetricCollection] = {}
        self._logged: dict[int, int] = {}
        self._names: dict[int, str] = {}  # dataloader_idx -> set name, from the batches
        self._scales: dict[int, int] = {}  # dataloader_idx -> scale, from the batches

    # ---- sets ----------------------------------------------------------------------------------------------
    def set_names(self, trainer: L.Trainer, stage: str) -> list[str]:
        """One name per dataloader of ``stage``: the ``set`` its batches carry, else ``set{idx}``."""
        batches = trainer.num_test_batches if stage == "test" else trainer.num_val_batches
        count = max(len(batches or []), max(self._names, default=-1) + 1)
        return [self._names.get(i, f"set{i}") for i in range(count)]

    def set_scale(self, idx: int) -> int:
        """The scale the batches of dataloader ``idx`` carry (4 when they carry none)."""
        return self._scales.get(idx, 4)

    def _read_batch(self, batch: Any, idx: int) -> None:
        """Record the set name and scale the batch carries (the first batch of a set fixes them)."""
        if not isinstance(batch, dict):
            return
        if idx not in self._names and batch.get("set") is not None:
            names = batch["set"]
            self._names[idx] = str(names[0] if isinstance(names, (list, tuple)) else names)
        if idx not in self._scales:
            self._scales[idx] = batch_scale(batch, default=4)

    def collection(self, trainer: L.Trainer, pl_module: L.LightningModule, idx: int) -> MetricCollection:
        """The collection of dataloader ``idx`` (metric networks built once, shared by all sets)."""
        if self._base is None:
            self._base = MetricCollection(self.metric_names, self.weights, self.crop_border or 0,
                                          device=pl_module.device, quantize=self.quantize)
        if idx not in self._sets:
            border = self.crop_border if self.crop_border is not None else self.set_scale(idx)
            self._sets[idx] = self._base.fork(crop_border=border)
        return self._sets[idx]

    # ---- hooks ---------------------------------------------------------------------------------------------
    def _start(self, trainer: L.Trainer) -> None:
        self._sets, self._logged, self._names, self._scales, self._rows = {}, {}, {}, {}, {}

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self._batch("val", trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._batch("test", trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._finish("val", trainer, pl_module)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish("test", trainer, pl_module)
        if trainer.is_global_zero and self.results.get("test"):
            print(f"\nTest metrics\n{format_table(self.results['test'], self.metric_names)}")
            for dataset, summary in self.results["test"].items():
                for metric, reason in summary["skipped"].items():
                    print(f"  {dataset}: {metric} skipped: {reason}")

    def _batch(self, stage: str, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
               batch_idx: int, idx: int) -> None:
        self._read_batch(batch, idx)
        if not isinstance(outputs, dict) or "sr" not in outputs:
            raise TypeError(f"EvaluationCallback: {stage} step must return a dict with 'sr', 'gt', 'lq', 'name' "
                            f"(got {type(outputs).__name__})")
        sr, gt, lq = outputs["sr"], outputs.get("gt"), outputs.get("lq")
        names = outputs.get("name") or [f"{batch_idx:05d}_{i}" for i in range(sr.shape[0])]
        self.collection(trainer, pl_module, idx).update(sr, gt, list(names))
        done = self._logged.get(idx, 0)
        if done < self.log_images and trainer.is_global_zero:
            n = min(self.log_images - done, sr.shape[0])
            self._log_images(stage, trainer, idx, [t for t in (lq, sr, gt) if t is not None], n, done)
            self._logged[idx] = done + n
        rows = self._rows.setdefault(idx, [])
        if stage == "test" and trainer.is_global_zero and len(rows) < self.contact_sheet:
            for i in range(min(self.contact_sheet - len(rows), sr.shape[0])):
                rows.append(contact_row(None if lq is None else lq[i], sr[i], None if gt is None else gt[i],
                                        self.contact_size))

    def _log_images(self, stage: str, trainer: L.Trainer, idx: int, images: list[torch.Tensor], n: int,
                    first: int) -> None:
        names = self.set_names(trainer, stage)
        dataset = names[idx] if idx < len(names) else f"set{idx}"
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if experiment is None or not hasattr(experiment, "add_image"):
                continue
            for i in range(n):
                grid = side_by_side(*[t[i : i + 1].detach() for t in images], max_items=1)  # (3, H, W*k)
                experiment.add_image(f"{stage}/{dataset}/images/{first + i}", grid, global_step=trainer.global_step)

    # ---- end of epoch --------------------------------------------------------------------------------------
    @staticmethod
    def gather(coll: MetricCollection) -> list[dict[str, Any]]:
        """The set's rows. Distributed: all ranks' rows, less the duplicates a distributed sampler pads with (same
        image name), sorted by name; a metric skipped on any rank is skipped everywhere (same keys on all ranks)."""
        rows, skipped = coll.rows, dict(coll.skipped)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (rows, skipped))
            for _, part in gathered:
                skipped.update({k: v for k, v in part.items() if k not in skipped})
            unique: dict[str, dict[str, Any]] = {}
            for row in (row for part, _ in gathered for row in part):
                unique.setdefault(row["name"], row)
            rows = [unique[k] for k in sorted(unique)]
        coll.skipped.update(skipped)
        return [{k: v for k, v in row.items() if k not in skipped} for row in rows]

    def _finish(self, stage: str, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        results: dict[str, dict[str, Any]] = {}
        reports: list[str] = []
        for idx, dataset in enumerate(self.set_names(trainer, stage)):  # same order on every rank (collectives)
            coll = self.collection(trainer, pl_module, idx)
            rows = self.gather(coll)
            values = coll.compute(rows)
            for metric, value in values.items():
                pl_module.log(f"{stage}/{dataset}/{metric}", float(value), sync_dist=True, add_dataloader_idx=False)
            results[dataset] = {
                "stage": stage, "dataset": dataset, "num_images": len(rows), "scale": self.set_scale(idx),
                "crop_border": coll.crop_border, "epoch": trainer.current_epoch, "global_step": trainer.global_step,
                "metrics": values,
                "higher_is_better": {k: coll.higher_is_better(k) for k in coll.names if k in coll.metrics},
                "skipped": dict(coll.skipped),
            }
            if trainer.is_global_zero:
                folder = self._out_dir(trainer) / stage / dataset
                self._wrote(*self._write_set(folder, rows, results[dataset], coll.names))
                if stage == "test":
                    reports.append(self._write_report(folder, results[dataset]))
                    self._write_contact_sheet(trainer, folder, dataset, self._rows.get(idx, []))
        self.results[stage] = results
        if trainer.is_global_zero and results:
            self._write_overview(self._out_dir(trainer) / stage, results)
            if reports:
                path = self._out_dir(trainer) / stage / "report.md"
                path.write_text("\n".join(reports))
                self._wrote(path)
        self._sets, self._rows = {}, {}

    def _wrote(self, *paths: Path) -> None:
        """Record written files in :attr:`written` (a file written again moves to the end)."""
        for path in paths:
            if path in self.written:
                self.written.remove(path)
            self.written.append(path)

    def _write_report(self, folder: Path, summary: dict[str, Any]) -> str:
        """``report.json`` and ``report.md`` of one set; returns the markdown."""
        dataset = self.paper_names.get(summary["dataset"], summary["dataset"])
        rows = [] if self.paper_method is None else self.paper.rows(self.paper_method, dataset, summary["scale"])
        report = build_report(summary, rows, self.paper_method, dataset)
        text = report_markdown(report, self.paper.methods)
        (folder / "report.json").write_text(json.dumps(report, indent=2, allow_nan=True) + "\n")
        (folder / "report.md").write_text(text)
        self._wrote(folder / "report.md", folder / "report.json")
        return text

    def _write_contact_sheet(self, trainer: L.Trainer, folder: Path, dataset: str, rows: list[torch.Tensor]) -> None:
        if not rows:
            return
        sheet = contact_sheet(rows)  # uint8 (3, H, W)
        self._wrote(save_png(sheet, folder / "contact_sheet.png"))
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if experiment is not None and hasattr(experiment, "add_image"):
                experiment.add_image(f"test/{dataset}/contact_sheet", sheet, global_step=trainer.global_step)

    def _out_dir(self, trainer: L.Trainer) -> Path:
        if self.out_dir is not None:
            return Path(self.out_dir)
        return (run_folder(trainer) or Path(trainer.default_root_dir)) / "eval"

    @staticmethod
    def _write_set(folder: Path, rows: list[dict[str, Any]], summary: dict[str, Any], names: list[str]) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        columns = [n for n in names if any(n in row for row in rows)]
        with open(folder / "per_image.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["name", *columns], restval="")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
        (folder / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
        lines = [f"# {summary['stage']} / {summary['dataset']}", "",
                 f"{summary['num_images']} images, scale x{summary['scale']}, PSNR/SSIM border crop "
                 f"{summary['crop_border']}, epoch {summary['epoch']}, step {summary['global_step']}", "",
                 format_table({summary["dataset"]: summary}, names)]
        if summary["skipped"]:
            lines += ["", "Skipped:"] + [f"- {k}: {v}" for k, v in summary["skipped"].items()]
        (folder / "summary.md").write_text("\n".join(lines) + "\n")
        return [folder / "per_image.csv", folder / "summary.md", folder / "summary.json"]

    def _write_overview(self, folder: Path, results: dict[str, dict[str, Any]]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").write_text(json.dumps(results, indent=2, allow_nan=True) + "\n")
        skipped = [f"- {d}: {m}: {r}" for d, s in results.items() for m, r in s["skipped"].items()]
        text = format_table(results, self.metric_names) + ("\n\nSkipped:\n" + "\n".join(skipped) if skipped else "")
        (folder / "summary.md").write_text(text + "\n")
        self._wrote(folder / "summary.md", folder / "summary.json")
