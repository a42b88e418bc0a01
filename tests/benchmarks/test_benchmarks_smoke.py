"""Smoke test: each benchmark's ``run(quick=True)`` on CPU returns measured rows with the expected keys.

The settings are shrunk (one stage-1 size, one TUDSR setting) so the file stays well under a minute on a shared CPU;
the three benchmark runs (2-5 s each here) are in the slow set, the report's arithmetic in the default one.
"""

from __future__ import annotations

import importlib.metadata
import math
from pathlib import Path

import pytest

from benchmarks import __main__ as report
from benchmarks import common, inference, train_step


def _finite_positive(x: object) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.mark.slow  # a benchmark run
def test_train_step_quick_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(train_step.SIZES, "demo", {"stage1": (32, 1), "stage2": (64, 1, 32), "dit": (96, 1)})
    rows = train_step.run(("stage1",), device="cpu", size="demo", quick=True)
    assert [r["variant"] for r in rows] == ["crop", "crop=R"]
    for r in rows:
        assert r["status"] == "measured", r
        assert {"module", "size", "device", "crop", "batch", "steps", "s_per_batch", "peak_mem_mb"} <= r.keys()
        assert r["steps"] == 1 and _finite_positive(r["s_per_batch"])
        assert isinstance(r["peak_mem_mb"], float) and math.isfinite(r["peak_mem_mb"])  # CPU: a lower bound, may be 0
    skipped = train_step.run(("stage1", "dit_flux2"), device="cpu", size="real", quick=True)
    assert skipped and all(r["status"] == "skipped" and r["reason"] == "no CUDA" for r in skipped)


@pytest.mark.slow  # a benchmark run
def test_inference_quick_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference, "TABLE3", inference.TABLE3[:1])
    monkeypatch.setattr(inference, "run_strsr", lambda *a, **k: [])
    rows = inference.run(device="cpu", quick=True)
    measured = [r for r in rows if r["status"] == "measured"]
    assert {r["variant"] for r in measured} == {"set_adapter", "fused copies"}
    for r in measured:
        assert r["setting"] == "x4 32->128" and _finite_positive(r["latency_s"])
    fused = next(r for r in measured if r["variant"] == "fused copies")
    assert fused["max_abs_diff"] < 1e-3  # merged copies compute the same function as switched adapters
    assert any(r["status"] == "skipped" and r["reason"] == "no CUDA" for r in rows)


@pytest.mark.slow  # a benchmark run
def test_strsr_tiled_rows() -> None:
    rows = inference.run_strsr("cpu", iters=1, quick=True)
    assert len(rows) == 1 and rows[0]["setting"] == "x4 48->192" and _finite_positive(rows[0]["latency_s"])


def test_mfu_and_peaks() -> None:
    assert report.peak_bf16("NVIDIA H100 80GB HBM3") == 989e12
    assert report.peak_bf16("NVIDIA H100 PCIe") == 756e12
    assert report.peak_bf16("NVIDIA H200") == 989e12 and report.peak_bf16("Unknown GPU") is None
    rows = [{"device": "cuda", "tflop_per_batch": 98.9, "s_per_batch": 0.5}, {"device": "cpu", "s_per_batch": 1.0}]
    report.add_mfu(rows, 989e12)
    assert rows[0]["mfu"] == pytest.approx(0.2) and "mfu" not in rows[1]
    # the installed distribution's own record (local version labels such as "+cu130" aside)
    assert report.machine()["torch"].split("+")[0] == importlib.metadata.version("torch").split("+")[0]


def test_cpu_peak_memory_window(monkeypatch: pytest.MonkeyPatch) -> None:
    status = Path("/proc/self/status")
    if status.is_file():  # Linux: the kernel's high-water mark of this process (VmHWM, KiB), read independently
        hwm_kib = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
        assert common._rss_peak_mb() == pytest.approx(hwm_kib / 1024, rel=0.02)
    marks = iter([100.0, 350.0, 90.0])  # high-water marks (MiB) at the reset and at two later readings
    monkeypatch.setattr(common, "_rss_peak_mb", lambda: next(marks))
    common.reset_peak_memory("cpu")
    assert common.peak_memory_mb("cpu") == 250.0  # the mark rose by 250 MiB inside the window
    assert common.peak_memory_mb("cpu") == 0.0  # a reading under the window's start counts as no growth
