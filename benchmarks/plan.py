"""Memory, FLOP and time plan of every real config, without a GPU and without weights.

    python -m benchmarks.plan [--quick] [--no-validation] [--cases SUBSTRING ...]

Each real config (``configs/stage1.yaml`` at 512, ``stage2.yaml`` at 1024 in 2 x 2 chunks of 512,
``strsr_flux2.yaml`` / ``strsr_zimage.yaml`` at 1024, the DiT stage 2 ``strsr_stage2_{flux2,zimage}.yaml`` at
2048 in 2 x 2 chunks of 1024, the TUDSR predict configs at the TUDSR Table 3 sizes, the StrSR and DiT
twice-upsampling predict configs at 256 / 512 px inputs) is loaded
with ``onestep_sr.config.load_config``, its ``pretrained:`` sources swapped for the real architectures
(:func:`benchmarks.arch.offline`), and its LightningModule built on the meta device. One steady-state training
step runs through the module's own ``training_step`` (G and D updates; :mod:`benchmarks.step_meter`) with CUDA
bf16 autocast and CUDA's fused attention emulated (:mod:`benchmarks.meta_device`), under ``FlopCounterMode``, a
saved-tensors hook and a live-bytes meter. Per update (G and D separately) the table gives parameters (total /
trainable of that network), FLOPs, activation bytes kept for backward (per micro-batch), parameter / gradient /
AdamW-state bytes of that network, the predicted peak on one GPU (allocated bytes: every resident tensor of the
module plus the live peak of the step; the CUDA context and allocator fragmentation come on top), on 4 and 8 GPUs
under ``plugins.fsdp.LoRAFSDPStrategy`` (StrSR), and the seconds per update on an H100 (989 TFLOP/s dense bf16)
at :data:`benchmarks.plan_model.MFU`.

Cases: gradient checkpointing on / off; StrSR with the live Qwen3-VL vs cached features (the VLM forward is
counted analytically, :class:`benchmarks.plan_model.VLMStandIn`); StrSR's generator step with the real logits
under no_grad (the module's code) and, derived from a measured discriminator pass, with grad (``+D real grad``:
one more pass of saved activations and its input-gradient backward). The StrSR rows have FDL on (phase 2, the
larger step).

Validation rows: the same prediction for the CPU (fp32, no autocast, CPU attention) against a measured CPU step of
the same module in a fresh process (:mod:`benchmarks.plan_validate`): the demo configs (DiT stage 2 included)
and the real-size stage 1 at crop 128. ``--quick`` keeps the demo rows only.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.arch import ROOT, offline, set_all
from benchmarks.common import print_table, write_json
from benchmarks.meta_device import LiveBytes, SavedBytes, TargetDevice, storage_bytes
from benchmarks.plan_model import MFU, VLMStandIn, fsdp_peak, fsdp_split, network_params, seconds, zero_adapter_file
from benchmarks.step_meter import attach_trainer, build_module, run_batches, synthetic_batch

__all__ = ["Case", "TRAIN_CASES", "TABLE3_CASES", "INFER_CASES", "VALIDATION_CASES", "plan_training",
           "plan_inference", "validate", "main"]

GIB = 2**30
CONFIGS = ROOT / "configs"
#: TUDSR Table 3 inference seconds on an H800 (x4 / x8 at 128 and 256 px inputs)
PAPER_TABLE3 = {("predict_x4.yaml", 128): 0.0596, ("predict_x8.yaml", 128): 0.4201,
                ("predict_x4.yaml", 256): 0.4296, ("predict_x8.yaml", 256): 2.2848}


@dataclass(frozen=True)
class Case:
    label: str
    config: str  # under configs/
    crop: int  # training crop (GT size) or inference LR size
    gc: bool | None = None  # gradient checkpointing of the generator; None: as configured
    cached: bool = False  # StrSR: cached VLM features instead of the live VLM
    real: bool = True  # real config (offline architectures) or a demo config


TRAIN_CASES = (
    Case("stage1 512", "stage1.yaml", 512),
    Case("stage1 512 GC", "stage1.yaml", 512, gc=True),
    Case("stage2 1024=4x512", "stage2.yaml", 1024),
    Case("stage2 1024=4x512 GC", "stage2.yaml", 1024, gc=True),
    Case("FLUX.2 1024 cached GC", "strsr_flux2.yaml", 1024, cached=True),
    Case("FLUX.2 1024 cached noGC", "strsr_flux2.yaml", 1024, gc=False, cached=True),
    Case("FLUX.2 1024 liveVLM GC", "strsr_flux2.yaml", 1024),
    Case("FLUX.2 1024 liveVLM noGC", "strsr_flux2.yaml", 1024, gc=False),
    Case("Z-Image 1024 cached GC", "strsr_zimage.yaml", 1024, cached=True),
    Case("Z-Image 1024 cached noGC", "strsr_zimage.yaml", 1024, gc=False, cached=True),
    Case("Z-Image 1024 liveVLM GC", "strsr_zimage.yaml", 1024),
    Case("FLUX.2 stage2 2048=4x1024 cached GC", "strsr_stage2_flux2.yaml", 2048, cached=True),
    Case("FLUX.2 stage2 2048=4x1024 liveVLM GC", "strsr_stage2_flux2.yaml", 2048),
    Case("Z-Image stage2 2048=4x1024 cached GC", "strsr_stage2_zimage.yaml", 2048, cached=True),
)
#: TUDSR Table 3's inference settings (also timed by :mod:`benchmarks.gpu_check`)
TABLE3_CASES = tuple(Case(f"x{s} {n}->{n * s}", f"predict_x{s}.yaml", n) for n in (128, 256) for s in (4, 8))
INFER_CASES = (
    *TABLE3_CASES,
    # StrSR (released weights or our export; 1024 px tiles): one tile, then 3 x 3 tiles
    Case("StrSR-F x4 256->1024", "predict_strsr_flux2.yaml", 256),
    Case("StrSR-F x4 512->2048", "predict_strsr_flux2.yaml", 512),
    Case("StrSR-Z x4 256->1024", "predict_strsr_zimage.yaml", 256),
    # TUDSR twice upsampling on the FLUX.2 DiT (two passes, 1024 px tiles)
    Case("FLUX.2 2x x4 256->1024", "predict_strsr2_x4_flux2.yaml", 256),
    Case("FLUX.2 2x x8 256->2048", "predict_strsr2_x8_flux2.yaml", 256),
)
VALIDATION_CASES = (
    Case("demo stage1 64", "demo/stage1.yaml", 64, real=False),
    Case("demo stage2 64=4x32", "demo/stage2.yaml", 64, real=False),
    Case("demo FLUX.2 96 cached", "demo/strsr_flux2.yaml", 96, cached=True, real=False),
    Case("demo Z-Image 96 cached", "demo/strsr_zimage.yaml", 96, cached=True, real=False),
    Case("demo FLUX.2 stage2 192=4x96 cached", "demo/strsr_stage2_flux2.yaml", 192, cached=True, real=False),
    Case("real stage1 128", "stage1.yaml", 128),
)


# ------------------------------------------------------------------------------------------- configs and batches
def model_config(case: Case, adapter: str | None, fp32: bool = False) -> dict[str, Any]:
    """The ``model`` section of ``case``'s config, prepared: real architectures, gradient checkpointing as the
    case says, cached features (``VLMCondition(vlm=None)``), every scheduled loss term on from step 0 (StrSR
    phase 2: FDL), the stage-1 / inference adapter files, and with ``fp32`` every network in fp32."""
    model = copy.deepcopy(_load(case.config, case.real))
    init = model["init_args"]
    gen = init["generator"]["init_args"]
    if case.gc is not None:
        target = gen["backend"]["init_args"] if "backend" in gen else gen
        target["gradient_checkpointing"] = case.gc
    cond = gen.get("condition", {}).get("init_args")
    if case.cached and cond is not None and cond.get("vlm") is not None:
        width = cond["vlm"]["config"]["text_config"]["hidden_size"]
        init["generator"]["init_args"]["condition"]["init_args"] = {
            **cond, "vlm": None, "processor": None, "prompt_ids": list(cond["prompt_ids"]), "feature_dim": width}
    recon = init.get("reconstruction", {}).get("init_args", {})
    if recon.get("start_steps"):
        recon["start_steps"] = {name: 0 for name in recon["start_steps"]}
    for key in ("stage1_adapter", "adapter1", "adapter2", "weights"):
        if key in init and init[key] is not None:
            init[key] = adapter
    if fp32:
        set_all(model, "dtype", "fp32")
    return model


@functools.lru_cache(maxsize=None)
def _load(config: str, real: bool) -> dict[str, Any]:
    """The merged ``model`` section of ``configs/<config>`` (``offline`` for a real config); cached per process."""
    from onestep_sr.config import load_config

    cfg = load_config(CONFIGS / config)
    return (offline(cfg) if real else cfg)["model"]


def stage1_adapter(case: Case, workdir: Path) -> str:
    """A zero stage-1 export shaped like that of ``case``'s family: the SD2.1 LoRA (real or demo) or, for a DiT
    stage 2 or a StrSR predict config (``strsr_stage2_<backend>``, ``predict_strsr_<backend>``,
    ``predict_strsr2_x<M>_<backend>``), the StrSR export of ``strsr_<backend>`` (LoRA + ``<stem>_mlp`` file)."""
    dit = re.fullmatch(r"(?:strsr_stage2_|predict_strsr_|predict_strsr2_x\d+_)(\w+)\.yaml", Path(case.config).name)
    config = f"strsr_{dit[1]}.yaml" if dit else "stage1.yaml"
    config = config if case.real else f"demo/{config}"
    source = Case("adapter", config, 64, cached=True, real=case.real)
    path = workdir / f"stage1_{config.replace('/', '_').removesuffix('.yaml')}.safetensors"
    if not path.exists():
        gen = build_module(model_config(source, None), "meta").generator
        if hasattr(gen, "backend"):  # OneStepDiTGenerator.export_adapter's layout, zeros
            from safetensors.torch import save_file

            zero_adapter_file(gen.backend.transformer, gen.adapter_name, path)
            if gen.mlp is not None:
                save_file({k: torch.zeros(tuple(v.shape), dtype=v.dtype) for k, v in gen.mlp.state_dict().items()},
                          str(gen.export_paths(path)[1]))
        else:
            zero_adapter_file(gen.unet, gen.adapter_name, path)
    return str(path)


def batch_plan(model: Any) -> tuple[list[int], list[int], int]:
    """(measured batch counters, counters that rebuild their starting state, micro-batches per update) of a
    steady-state update: StrSR a D and a G batch; an accumulating module the step batch of a window, starting with
    the gradients of an earlier batch of the window."""
    if getattr(model, "alternate", False):
        return [0, 1], [], 1
    a = int(model.accumulate)
    if a > 1:
        return [2 * a - 1], [a], a
    return [0], [], 1


def cond_shape(model: Any) -> tuple[int, int] | None:
    cond = getattr(model.generator, "condition", None)
    if cond is None or getattr(cond, "vlm", True) is not None or not hasattr(cond, "feature_dim"):
        return None
    return (max(1, len(cond.prompt_ids) - 1) if cond.prompt_ids else 16, cond.feature_dim)


# ------------------------------------------------------------------------------------------- training
def _discriminator_pass(model: Any, crop: int) -> tuple[int, int]:
    """(FLOPs, saved bytes) of one discriminator forward on a (1, 3, crop, crop) image that requires grad, as in
    the generator step (heads frozen)."""
    from torch.utils.flop_counter import FlopCounterMode

    saved = SavedBytes([model])
    with TargetDevice("cuda"), torch.autocast("cuda", dtype=torch.bfloat16), model.frozen_discriminator():
        x = torch.rand(1, 3, crop, crop, device="meta", requires_grad=True)
        with FlopCounterMode(display=False) as flops, saved.hooks():
            model.discriminator(x, augment=False)
    return flops.get_total_flops(), sum(saved.bytes.values())


def plan_training(case: Case, workdir: Path) -> list[dict[str, Any]]:
    """One row per update kind (G, D, and for StrSR ``G +D real grad``) of a training config. A stage 2 makes
    N^2 G and N^2 D updates per image (one per chunk): its rows are per update, its peak that of the whole image
    (stage-1 pass, then one chunk at a time), the stage-1 pass's FLOPs shared by the image's G updates."""
    adapter = stage1_adapter(case, workdir) if "stage2" in case.config else None
    model = build_module(model_config(case, adapter), "meta")
    attach_trainer(model)
    counters, rebuild, micro = batch_plan(model)
    batch = synthetic_batch(case.crop, cond=cond_shape(model))
    cond = getattr(model.generator, "condition", None)
    live = VLMStandIn(cond) if cond is not None and getattr(cond, "vlm", None) is not None else None
    with live.active() if live else contextlib.nullcontext():
        trace = run_batches(model, [(batch, c) for c in counters], "cuda", rebuild)
    vlm_flops = live.flops_per_call[-1] if live and live.flops_per_call else 0
    # the VLM runs once per batch: on each batch of an alternating module, once per image (all chunks) in stage 2
    alternate = bool(getattr(model, "alternate", False))
    vlm = {"G": vlm_flops / max(1, trace["G"]["updates"] // (1 if alternate else len(counters))),
           "D": vlm_flops if alternate else 0}
    dit = hasattr(model.generator, "backend")
    split = fsdp_split(model) if dit else None
    opts = model.trainer.optimizers
    rows = []
    for phase, net, params, opt in (("G", model.generator, model.generator_parameters(), opts[0]),
                                    ("D", model.discriminator, model.discriminator_parameters(), opts[1])):
        t = trace[phase]
        calls = max(1, t["updates"])
        total, trainable = network_params(net, params)
        flops = (t["flops"] / calls + vlm[phase]) * micro
        row = {"case": case.label, "update": phase, "params_M": total / 1e6, "trainable_M": trainable / 1e6,
               "TFLOP": flops / 1e12, "act_GiB": t["saved_bytes"] / calls / GIB,
               "param_GiB": storage_bytes(list(net.parameters())) / GIB, "grad_GiB": storage_bytes(params) / GIB,
               "optim_GiB": storage_bytes([v for s in opt.state.values() for v in s.values()
                                          if torch.is_tensor(v) and v.numel() > 1]) / GIB,
               "peak_GiB": t["peak_bytes"] / GIB, "s_H100": seconds(flops)}
        if split:
            optim = trace["resident_before"]["optimizer"]
            grads = trace["resident_before"]["grads"]
            for world in (4, 8):
                row[f"fsdp{world}_GiB"] = fsdp_peak(t["peak_bytes"], split, optim, grads, world) / GIB
        rows.append(row)
    if dit:  # the generator step with the real logits' pass kept for backward (one more D pass, input grads)
        d_flops, d_saved = _discriminator_pass(model, getattr(model, "chunk", case.crop))  # stage 2: a chunk
        g = dict(rows[0])
        g["update"] = "G +D real grad"
        g["TFLOP"] += d_flops * micro / 1e12
        g["act_GiB"] += d_saved / GIB
        g["peak_GiB"] += d_saved / GIB
        g["s_H100"] = seconds(g["TFLOP"] * 1e12)
        for world in (4, 8):
            g[f"fsdp{world}_GiB"] += d_saved / GIB
        rows.insert(1, g)
    extra = {"resident_GiB": {k: v / GIB for k, v in trace["resident_before"].items()},
             "saved_GiB_by_component": {k: v / GIB for k, v in trace["saved_by_component"].items()},
             "fsdp_split_GiB": {k: (v / GIB if k != "blocks" else v) for k, v in (split or {}).items()},
             "vlm_TFLOP_per_call": vlm_flops / 1e12, "updates": {k: trace[k]["updates"] for k in ("G", "D")},
             "batches": len(counters)}
    rows[0]["detail"] = extra
    return rows


# ------------------------------------------------------------------------------------------- inference
def plan_inference(case: Case, workdir: Path) -> dict[str, Any]:
    """One predict batch of ``case.crop`` px through the module's own ``predict_step`` (bf16 autocast of the
    pipeline, CUDA attention): FLOPs, peak, predicted seconds, and the paper's H800 seconds. A live VLM condition
    (StrSR) is counted analytically (:class:`benchmarks.plan_model.VLMStandIn`): its FLOPs, and its weights in
    the peak, not its transient activations."""
    from torch.utils.flop_counter import FlopCounterMode

    adapter = stage1_adapter(case, workdir)
    model = build_module(model_config(case, adapter), "meta")
    model.eval()
    batch = {"lq": torch.rand(1, 3, case.crop, case.crop).to("meta"), "name": ["plan"]}
    resident = storage_bytes(list(model.parameters()) + list(model.buffers()))
    cond = getattr(model.generator, "condition", None)
    vlm = VLMStandIn(cond) if cond is not None and getattr(cond, "vlm", None) is not None else None
    live = LiveBytes()
    with vlm.active() if vlm else contextlib.nullcontext(), TargetDevice("cuda"), \
            FlopCounterMode(display=False) as flops, live:
        model.predict_step(batch, 0)
    total = flops.get_total_flops() + (sum(vlm.flops_per_call) if vlm else 0)
    return {"case": case.label, "update": "infer", "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "trainable_M": 0.0, "TFLOP": total / 1e12, "param_GiB": resident / GIB,
            "peak_GiB": (resident + live.peak) / GIB, "s_H100": seconds(total),
            "paper_s_H800": PAPER_TABLE3.get((case.config, case.crop)),
            "detail": {"vlm_TFLOP": sum(vlm.flops_per_call) / 1e12 if vlm else 0.0,
                       "vlm_calls": len(vlm.flops_per_call) if vlm else 0}}


# ------------------------------------------------------------------------------------------- validation
def validate(case: Case, workdir: Path) -> dict[str, Any]:
    """Predicted (meta, CPU target, fp32) vs measured (a fresh CPU process, :mod:`benchmarks.plan_validate`) peak
    of one steady-state step: ``alloc`` = PyTorch's CPU allocator (the quantity predicted), ``rss`` = the peak
    resident set growth of the whole process (libraries included)."""
    adapter = stage1_adapter(case, workdir) if "stage2" in case.config else None
    cfg = model_config(case, adapter, fp32=True)
    model = build_module(copy.deepcopy(cfg), "meta")
    attach_trainer(model)
    counters, rebuild, _ = batch_plan(model)
    cond = cond_shape(model)
    trace = run_batches(model, [(synthetic_batch(case.crop, cond=cond), c) for c in counters], "cpu", rebuild)
    predicted = trace["peak_bytes"]
    spec = workdir / f"spec_{abs(hash(case.label))}.json"
    spec.write_text(json.dumps({"model": cfg, "crop": case.crop, "cond": cond, "measured": counters,
                                "rebuild": rebuild}))
    row: dict[str, Any] = {"case": case.label, "pred_GiB": predicted / GIB}
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "benchmarks.plan_validate", str(spec)], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {**row, "error": (out.stderr.strip().splitlines() or ["?"])[-1][:160]}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for key, measured in (("alloc", result["alloc_peak"]), ("rss", result["rss_growth"])):
        row[f"{key}_GiB"] = measured / GIB
        row[f"{key}_err_%"] = 100 * (predicted - measured) / measured
    row["rss_transient_GiB"] = result["rss_transient"] / GIB
    row["pred_transient_GiB"] = (predicted - sum(trace["resident_before"].values())) / GIB
    row["measure_s"] = time.perf_counter() - start
    return row


# ------------------------------------------------------------------------------------------- report
COLUMNS = ("case", "update", "params_M", "trainable_M", "TFLOP", "act_GiB", "param_GiB", "grad_GiB", "optim_GiB",
           "peak_GiB", "fsdp4_GiB", "fsdp8_GiB", "s_H100", "paper_s_H800")


def _table_rows(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{c: r[c] for c in columns if c in r} for r in rows]


def _progress(rows: list[dict[str, Any]], start: float) -> list[dict[str, Any]]:
    """Print each finished row at once (stderr): the full plan takes minutes."""
    for r in rows:
        print(f"[{time.perf_counter() - start:5.0f} s] {json.dumps({k: v for k, v in r.items() if k != 'detail'})}",
              file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="validation rows of the demo configs only")
    parser.add_argument("--no-validation", action="store_true", help="skip the measured CPU validation rows")
    parser.add_argument("--cases", nargs="*", default=None, help="only cases whose label contains one of these")
    args = parser.parse_args(argv)
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "diffusers", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)

    def wanted(case: Case) -> bool:
        return args.cases is None or any(s in case.label for s in args.cases)

    out: dict[str, list[dict[str, Any]]] = {"train": [], "infer": [], "validation": []}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="plan_") as tmp:  # zero adapter files: up to 2 GB (Z-Image)
        workdir = Path(tmp)
        for case in filter(wanted, TRAIN_CASES):
            out["train"] += _progress(plan_training(case, workdir), start)
        for case in filter(wanted, INFER_CASES):
            out["infer"] += _progress([plan_inference(case, workdir)], start)
        if not args.no_validation:
            cases = [c for c in VALIDATION_CASES if wanted(c) and (not args.quick or not c.real)]
            out["validation"] = [_progress([validate(c, workdir)], start)[0] for c in cases]
    print_table(_table_rows(out["train"] + out["infer"], COLUMNS),
                f"Plan: real configs on meta, per update, H100 bf16 at MFU {MFU:.0%} (GiB = 2^30 bytes)")
    if out["validation"]:
        print_table(out["validation"], "Validation: predicted vs measured peak of one CPU fp32 step (GiB)")
    meta = {"mfu": MFU, "peak_flops": 989e12, "seconds": time.perf_counter() - start}
    path = write_json([{"section": k, **r} for k, rows in out.items() for r in rows] + [{"section": "meta", **meta}],
                      "plan")
    print(f"\nwrote {path} ({meta['seconds']:.0f} s)")
    return out


if __name__ == "__main__":
    main()
