"""Measured peaks of a CPU training step, in a fresh process: the reference of the planner's validation rows.

    python -m benchmarks.plan_validate SPEC.json

``SPEC.json`` holds ``model`` (a prepared ``model`` config section, fp32), ``crop``, ``cond`` ([L, D] or null),
``measured`` and ``rebuild`` (batch counters, as :func:`benchmarks.step_meter.run_batches` takes them). The module
is built on the CPU and the same synthetic batches run through its ``training_step``: ``measured`` then
``rebuild`` (the steady state: optimizer states, accumulated gradients), ``measured`` (peak RSS), ``rebuild`` and
``measured`` once more (the allocator's peak). Printed as one JSON line:

- ``alloc_peak``: PyTorch's CPU allocator as ``torch.profiler`` records it (``profile_memory=True``): the tensors
  alive before the measured batches (parameters, buffers, gradients, optimizer states) plus the peak of the
  allocator's running total (``total_allocated`` of its allocation events) during them (the replayed run);
- ``rss_growth``: the peak resident set size during the measured batches (``/proc/self/status`` ``VmHWM``, reset
  through ``/proc/self/clear_refs`` just before them) minus the process's RSS before the module was built: all the
  process holds, libraries' first-use memory (oneDNN, OpenMP, lazily imported modules) included, so for a tiny
  demo model it is mostly that. The parent starts the process with ``MALLOC_MMAP_THRESHOLD_=65536``, so that
  glibc returns freed tensor memory to the system (as PyTorch's CUDA caching allocator makes it reusable);
- ``rss_transient``: the same peak minus the RSS just before the measured batches.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from typing import Any

import torch

__all__ = ["rss_bytes", "measure"]


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def rss_bytes() -> int:
    return _status("VmRSS")


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current RSS


def _allocator_peak(prof: Any) -> int:
    """Peak of the CPU allocator's running total (bytes allocated since profiling began) in a profile."""
    from torch._C._profiler import _ExtraFields_Allocation

    peak, stack = 0, list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        fields = node.extra_fields
        if isinstance(fields, _ExtraFields_Allocation) and fields.device.type == "cpu":
            peak = max(peak, int(fields.total_allocated))
        stack.extend(node.children)
    return peak


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.step_meter import attach_trainer, build_module, resident_bytes, synthetic_batch

    gc.collect()
    baseline = rss_bytes()
    model = build_module(spec["model"], "cpu")
    trainer = attach_trainer(model)
    model.train()
    cond = tuple(spec["cond"]) if spec.get("cond") else None
    batch = synthetic_batch(spec["crop"], device="cpu", cond=cond)

    def run(counters: list[int]) -> None:
        for counter in counters:
            trainer.fit_loop.epoch_loop.batch_progress.total.ready = counter + 1  # the module's batch counter
            model.training_step(batch, counter)

    measured, rebuild = spec["measured"], spec["rebuild"]
    run(measured + rebuild)
    gc.collect()
    before = rss_bytes()
    _reset_peak_rss()
    run(measured)
    hwm = _status("VmHWM")
    run(rebuild)
    gc.collect()
    resident = sum(resident_bytes(model).values())
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run(measured)
    return {"resident_before": resident, "alloc_peak": resident + _allocator_peak(prof),
            "rss_growth": hwm - baseline, "rss_transient": hwm - before, "baseline_rss": baseline}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    torch.manual_seed(0)
    print(json.dumps(measure(spec)))


if __name__ == "__main__":
    main()
