"""Small helpers shared by the benchmarks: timing, peak memory, a text table and a JSON record."""

from __future__ import annotations

import datetime
import json
import platform
import resource
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["RESULTS_DIR", "print_table", "write_json", "time_it", "reset_peak_memory", "peak_memory_mb"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
_CPU_BASELINE_MB: float = 0.0


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    """Print rows (same or overlapping keys) as an aligned text table under ``title``."""
    print(f"\n{title}")
    if not rows:
        print("(no rows)")
        return
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    cells = [[_fmt(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(v.rjust(w) for v, w in zip(r, widths)))


def write_json(rows: list[dict[str, Any]], name: str) -> Path:
    """Write ``benchmarks/results/<name>-<hostname>-<YYYYMMDD>.json``: {"name", "host", "date", "env", "rows"}."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().split(".")[0] or "host"
    today = datetime.date.today().strftime("%Y%m%d")
    path = RESULTS_DIR / f"{name}-{host}-{today}.json"
    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    record = {"name": name, "host": host, "date": today, "env": env, "rows": rows}
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn: Callable[[], Any], warmup: int, iters: int, device: torch.device | str) -> float:
    """Mean wall-clock seconds per call of ``fn`` after ``warmup`` calls (CUDA synchronised around the timing)."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / iters


def _rss_peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def reset_peak_memory(device: torch.device | str) -> None:
    """Start a new peak-memory window (CUDA: reset the allocator's peak; CPU: remember the RSS high-water mark)."""
    global _CPU_BASELINE_MB
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        _CPU_BASELINE_MB = _rss_peak_mb()


def peak_memory_mb(device: torch.device | str) -> float:
    """CUDA: ``max_memory_allocated`` in MiB since the last reset. CPU: growth of the process's peak RSS (MiB)
    since ``reset_peak_memory`` (0 when the window did not exceed the earlier peak: a lower bound)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return max(0.0, _rss_peak_mb() - _CPU_BASELINE_MB)
