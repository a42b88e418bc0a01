"""One benchmark report: ``python -m benchmarks [--quick] [--only degradation,train_step,inference]``.

Runs every benchmark that fits the machine (CPU always; GPU rows when CUDA is present, otherwise listed as skipped),
prints one table per benchmark under a description of the machine and writes all rows to
``benchmarks/results/<host>-<YYYYMMDD>.json``. With a GPU, the training rows get the model FLOP utilisation:
FLOPs of one training batch (``torch.utils.flop_counter.FlopCounterMode``; recomputation under gradient
checkpointing counted too) / seconds per batch / the device's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import socket
from typing import Any

import torch

from benchmarks.common import RESULTS_DIR, print_table

BENCHMARKS = ("degradation", "train_step", "inference")
# dense bf16 tensor-core peak, FLOP/s, by a substring of torch.cuda.get_device_name()
PEAK_BF16 = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "H800": 989e12, "H20": 148e12, "A100": 312e12,
             "A800": 312e12, "L40S": 362e12, "L4": 121e12, "RTX 4090": 165e12, "A10G": 70e12, "B200": 2250e12}


def peak_bf16(name: str | None) -> float | None:
    """Dense bf16 peak FLOP/s of a CUDA device named ``name`` (first matching key, most specific first)."""
    if not name:
        return None
    for key, value in PEAK_BF16.items():
        if key in name:
            return value
    return None


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"host": socket.gethostname().split(".")[0], "cpu": cpu, "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "cuda_device": cuda,
            "cuda": torch.version.cuda if cuda else None, "peak_bf16_flops": peak_bf16(cuda)}


def add_mfu(rows: list[dict[str, Any]], peak: float | None) -> None:
    for row in rows:
        if peak and row.get("device") == "cuda" and row.get("tflop_per_batch") and row.get("s_per_batch"):
            row["mfu"] = row["tflop_per_batch"] * 1e12 / row["s_per_batch"] / peak


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few steps, small settings (CPU smoke run)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset of " + ",".join(BENCHMARKS))
    args = parser.parse_args(argv)
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = set(only) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {BENCHMARKS}")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    info = machine()
    cuda = info["cuda_device"] is not None
    results: dict[str, list[dict[str, Any]]] = {}
    if "degradation" in only:
        from benchmarks import degradation

        kw = dict(crop=128, batch_sizes=(4,), iters=1, warmup=0) if args.quick else {}
        results["degradation"] = degradation.run(**kw)
    if "train_step" in only:
        from benchmarks import train_step

        rows = train_step.run(device="cpu", size="demo", quick=args.quick)
        rows += train_step.run(device="cuda" if cuda else "cpu", size="real", quick=args.quick)
        add_mfu(rows, info["peak_bf16_flops"])
        results["train_step"] = rows
    if "inference" in only:
        from benchmarks import inference

        rows = inference.run(device="cpu", size="demo", quick=args.quick)
        if cuda:
            rows = [r for r in rows if r.get("status") != "skipped"]
            rows += inference.run(device="cuda", size="real", quick=args.quick)
        results["inference"] = rows

    print("\nMachine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    for name, rows in results.items():
        print_table(rows, f"== {name} ==")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    today = datetime.date.today().strftime("%Y%m%d")
    path = RESULTS_DIR / f"{info['host']}-{today}.json"
    record = {"date": today, "quick": args.quick, "machine": info, "results": results}
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
