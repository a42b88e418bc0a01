"""The GPU check: the real configs on one GPU, each figure beside the planner's prediction and the paper's.

    python -m benchmarks.gpu_check            # one H100 / H200: a few minutes (budget 8)
    python -m benchmarks.gpu_check --dry-run  # the same code on the CPU with the demo architectures, tiny sizes

Rows:

- training, bf16 (``bf16-mixed``, the configs' bf16 bases), random weights at the released architectures
  (:func:`benchmarks.arch.offline`), the same synthetic batches the planner traces, timed by
  :class:`benchmarks.train_step.BatchTimer` in a Lightning ``Trainer``: TUDSR stage 1 at 512 (an update = 4
  accumulated batches), stage 2 at 1024 (2 x 2 chunks of 512 = one update), StrSR FLUX.2 klein-4B at 1024 with
  cached VLM features (G and D updates on alternating batches). Seconds per update, peak allocated memory
  (``torch.cuda.max_memory_allocated`` over the timed batches) and MFU (the planner's FLOPs per update / seconds /
  the device's dense bf16 peak);
- inference, the four TUDSR Table 3 settings through the predict configs' own module (``TUDSRInference``, random
  adapters), seconds per image beside the paper's H800 seconds;
- the Real-ESRGAN degradation on the GPU at crop 512 (:func:`benchmarks.degradation.run`), pairs per second.

Predictions come from :mod:`benchmarks.plan`, computed here on the meta device for the same cases. Writes
``benchmarks/results/gpu_check-<host>-<date>.json``.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from benchmarks import plan
from benchmarks.common import peak_memory_mb, print_table, reset_peak_memory, time_it, write_json
from benchmarks.plan import Case
from benchmarks.step_meter import build_module, synthetic_batch

GIB = 2**30
TRAIN = (Case("stage1 512", "stage1.yaml", 512), Case("stage2 1024=4x512", "stage2.yaml", 1024),
         Case("FLUX.2 1024 cached GC", "strsr_flux2.yaml", 1024, cached=True))
DRY_TRAIN = (Case("demo stage1 64", "demo/stage1.yaml", 64, real=False),
             Case("demo stage2 64=4x32", "demo/stage2.yaml", 64, real=False),
             Case("demo FLUX.2 96 cached", "demo/strsr_flux2.yaml", 96, cached=True, real=False))
DRY_INFER = {"predict_x4.yaml": "demo/predict_x4.yaml", "predict_x8.yaml": "demo/predict_x8.yaml"}
#: the papers' figures for the training rows (neither paper gives seconds per training step)
PAPER_TRAIN = {"stage1.yaml": "OMGSR: 21-24 GB, stage-1-like step, batch 1",
               "stage2.yaml": "TUDSR sec. 3.8: peak of one R x R chunk, ~stage 1",
               "strsr_flux2.yaml": "StrSR: trained on 80 GB A800s"}


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _peak_flops() -> float | None:
    from benchmarks.__main__ import peak_bf16

    return peak_bf16(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else None


def check_training(case: Case, device: str, workdir: Path, adapter: str | None, dry: bool) -> list[dict[str, Any]]:
    """Time the training case on ``device``; one row per update kind (stage 1 / 2: per update; StrSR: G and D)."""
    from benchmarks.train_step import time_module

    prediction = {r["update"]: r for r in plan.plan_training(case, workdir)}
    model = build_module(plan.model_config(case, adapter, fp32=dry), device)
    _, _, micro = plan.batch_plan(model)
    cond = plan.cond_shape(model)
    alternate = bool(getattr(model, "alternate", False))
    per_update = 2 if alternate else micro  # batches per (G and D) update
    warmup, steps = (per_update, per_update) if dry else (2 * per_update, 2 * per_update)
    batches = [synthetic_batch(case.crop, device="cpu", cond=cond, seed=i) for i in range(warmup + steps)]
    precision = "32-true" if dry else "bf16-mixed"
    loader = torch.utils.data.DataLoader(batches, batch_size=None)  # the batches as they are (no collation)
    timer = time_module(model, None, device, steps, warmup, precision, count_flops=False, loader=loader)
    rows = []
    peak_flops = _peak_flops()
    if alternate:  # even batches update D, odd ones G (DiTDistillModule); a batch is one update
        kinds = {"D": timer.times[0::2] if warmup % 2 == 0 else timer.times[1::2],
                 "G": timer.times[1::2] if warmup % 2 == 0 else timer.times[0::2]}
    else:  # one update = ``micro`` batches, each with a G and a D micro-step
        kinds = {"G+D": [sum(timer.times) / len(timer.times) * micro]}
    for kind, times in kinds.items():
        seconds = sum(times) / max(1, len(times))
        pred = _combined(prediction, kind)
        row = {"item": f"{case.label} {kind}", "measured_s": seconds, "measured_peak_GiB": timer.peak_mb / 1024,
               "pred_s_40%MFU": pred["s_H100"], "pred_peak_GiB": pred["peak_GiB"], "pred_TFLOP": pred["TFLOP"],
               "paper": PAPER_TRAIN.get(Path(case.config).name, "")}
        if peak_flops:
            row["MFU"] = pred["TFLOP"] * 1e12 / seconds / peak_flops
        rows.append(row)
    if case.config == "stage1.yaml" or case.config == "demo/stage1.yaml":
        rows[0]["_adapter"] = str(model.generator.export_adapter(workdir / "stage1_trained.safetensors"))
    del model, timer
    _free(device)
    return rows


def _combined(prediction: dict[str, dict[str, Any]], kind: str) -> dict[str, Any]:
    """The planner's figures for one timed unit: a G or D update, or (stage 1 / 2) a G and a D update."""
    if kind in prediction:
        return prediction[kind]
    g, d = prediction["G"], prediction["D"]
    return {"s_H100": g["s_H100"] + d["s_H100"], "peak_GiB": max(g["peak_GiB"], d["peak_GiB"]),
            "TFLOP": g["TFLOP"] + d["TFLOP"]}


def check_inference(case: Case, device: str, workdir: Path, adapter: str, dry: bool) -> dict[str, Any]:
    """Seconds per image of a predict config (``predict_step``) at one Table 3 setting."""
    run_case = replace(case, config=DRY_INFER[case.config], crop=case.crop // 8, real=False) if dry else case
    prediction = plan.plan_inference(run_case, workdir)
    model = build_module(plan.model_config(run_case, adapter, fp32=dry), device).eval()
    lq = torch.rand(1, 3, run_case.crop, run_case.crop, generator=torch.Generator().manual_seed(0)).to(device)
    batch = {"lq": lq, "name": ["check"]}
    reset_peak_memory(device)
    seconds = time_it(lambda: model.predict_step(batch, 0), 0 if dry else 1, 1 if dry else 3, device)
    row = {"item": f"infer {case.label}" + (f" (run at {run_case.crop} px)" if dry else ""), "measured_s": seconds,
           "measured_peak_GiB": peak_memory_mb(device) / 1024, "pred_s_40%MFU": prediction["s_H100"],
           "pred_peak_GiB": prediction["peak_GiB"], "pred_TFLOP": prediction["TFLOP"],
           "paper_s_H800": plan.PAPER_TABLE3.get((case.config, case.crop))}
    peak_flops = _peak_flops()
    if peak_flops:
        row["MFU"] = prediction["TFLOP"] * 1e12 / seconds / peak_flops
    del model
    _free(device)
    return row


def check_degradation(device: str, dry: bool) -> dict[str, Any]:
    from benchmarks import degradation

    crop, batch = (64, 2) if dry else (512, 16)
    rows = degradation.run([device], crop=crop, batch_sizes=(batch,), presets=("realesrgan",),
                           iters=1 if dry else 5, warmup=0 if dry else 2)
    r = rows[0]
    return {"item": f"degradation realesrgan crop {crop} batch {batch}", "pairs_per_s": r["pairs_per_s"],
            "pairs_per_s_with_kernels": r["pairs_per_s_with_kernels"], "measured_peak_GiB": r["peak_mem_mb"] / 1024}


def run(dry_run: bool = False, only: tuple[str, ...] = ("train", "infer", "degradation"),
        cases: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Every row (``only``: the sections; ``cases``: only the training / inference cases whose label contains one
    of these strings)."""
    def wanted(case: Case) -> bool:
        return cases is None or any(c in case.label for c in cases)

    device = "cpu" if dry_run else "cuda"
    if not dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run to check the code path on the CPU")
    workdir = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    rows: list[dict[str, Any]] = []
    adapter: str | None = None
    start = time.perf_counter()
    if "train" in only:
        for case in filter(wanted, DRY_TRAIN if dry_run else TRAIN):
            needs = plan.stage1_adapter(case, workdir) if "stage2" in case.config else None
            new = check_training(case, device, workdir, adapter or needs, dry_run)
            adapter = new[0].pop("_adapter", adapter)
            rows += new
    if "infer" in only:
        adapter = adapter or plan.stage1_adapter(Case("a", "stage1.yaml", 64, real=not dry_run), workdir)
        for case in filter(wanted, plan.TABLE3_CASES):
            rows.append(check_inference(case, device, workdir, adapter, dry_run))
    if "degradation" in only:
        rows.append(check_degradation(device, dry_run))
    rows.append({"item": "total seconds", "measured_s": time.perf_counter() - start})
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, demo architectures, tiny sizes")
    parser.add_argument("--only", nargs="+", default=["train", "infer", "degradation"],
                        choices=["train", "infer", "degradation"])
    parser.add_argument("--cases", nargs="+", default=None, help="only cases whose label contains one of these")
    args = parser.parse_args(argv)
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "diffusers", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    rows = run(args.dry_run, tuple(args.only), tuple(args.cases) if args.cases else None)
    device = "CPU dry run (demo sizes)" if args.dry_run else torch.cuda.get_device_name(0)
    print_table(rows, f"GPU check on {device}: measured beside the planner (H100 bf16, 40% MFU) and the paper")
    print(f"\nwrote {write_json(rows, 'gpu_check' + ('-dry' if args.dry_run else ''))}")
    return rows


if __name__ == "__main__":
    main()
