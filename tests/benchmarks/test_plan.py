"""The memory / FLOP planner (``benchmarks.plan``) against hand computation and measured CPU runs.

The real configs build on the meta device through the modules' own code; the meta emulation of a CUDA device
(autocast casting rules, fused attention, activation-checkpoint recomputation) behaves as specified; the meters
count what they claim; and a predicted peak matches PyTorch's CPU allocator on a real run of the same module.
The rows the planner prints (whole G and D updates of several models emulated, 3-16 s each here) are in the slow
set.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from benchmarks import plan, plan_model
from benchmarks.arch import offline
from benchmarks.meta_device import LiveBytes, SavedBytes, TargetDevice, rounded
from benchmarks.step_meter import build_module


# ------------------------------------------------------------------------------------------- configs on meta
def test_offline_swaps_every_pretrained_source() -> None:
    model = plan._load("strsr_flux2.yaml", True)  # FLUX.2, Qwen3-VL, ConvNeXt, VGG16 (LPIPS), VGG19 (FDL)
    text = json.dumps(model)
    assert '"pretrained": "' not in text  # every hub id and weight file became an architecture config
    cond = model["init_args"]["generator"]["init_args"]["condition"]["init_args"]
    assert cond["processor"] is None and cond["vlm"]["config"]["text_config"]["hidden_size"] == 2560
    assert cond["prompt_ids"].count(cond["vlm"]["config"]["image_token_id"]) == 1
    backend = model["init_args"]["generator"]["init_args"]["backend"]["init_args"]
    assert backend["transformer"]["config"]["num_single_layers"] == 20
    with pytest.raises(KeyError, match="no real-size architecture for pretrained source 'org/unknown'"):
        offline({"model": {"net": {"pretrained": "org/unknown", "subfolder": None}}})


def test_real_stage1_builds_on_meta_without_memory() -> None:
    """The issue's failing case: the real stage-1 config under torch.device("meta") (the empty-prompt embedding
    used to be copied to the CPU: "Cannot copy out of meta tensor")."""
    model = build_module(plan.model_config(plan.TRAIN_CASES[0], None), "meta")
    tensors = list(model.parameters()) + list(model.buffers())
    assert all(t.is_meta for t in tensors)
    gen = model.generator
    frozen_unet = sum(p.numel() for n, p in gen.unet.named_parameters() if ".lora_" not in n)
    assert frozen_unet == 865_910_724  # SD2.1(-base) UNet
    assert sum(p.numel() for p in gen.vae.parameters()) == 83_653_863  # SD VAE
    assert tuple(gen.prompt_embeds.shape) == (1, 77, 1024) and gen.prompt_embeds.is_meta
    assert 25e6 < sum(p.numel() for p in model.generator_parameters()) < 26e6  # rank-32 LoRA


# ------------------------------------------------------------------------------------------- the emulated device
def test_target_device_applies_cuda_autocast_rules_on_meta() -> None:
    lin = nn.Linear(16, 16, device="meta")
    ln = nn.LayerNorm(16, device="meta")
    x = torch.empty(4, 16, device="meta")
    saved_autocast = torch.autocast
    with TargetDevice("cuda") as mode:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            assert lin(x).dtype == torch.bfloat16  # lower-precision op
            assert ln(x.bfloat16()).dtype == torch.float32  # float32 op
            assert torch.softmax(x.bfloat16(), -1).dtype == torch.float32
            assert (x.bfloat16() + 1).dtype == torch.bfloat16  # not listed: runs in the input dtype
            assert torch.cat([x, x.bfloat16()]).dtype == torch.float32  # promote op
            assert mode._cast(lin.weight, torch.bfloat16) is mode._cast(lin.weight, torch.bfloat16)  # cast cache
            with torch.autocast(device_type=x.device.type, enabled=False):  # a module's own fp32 region
                assert lin(x).dtype == torch.float32
        assert lin(x).dtype == torch.float32  # outside autocast
    assert torch.autocast is saved_autocast


@pytest.mark.parametrize(("target", "backward"), [("cuda", "ScaledDotProductFlashAttentionBackward0"),
                                                  ("cpu", "ScaledDotProductFlashAttentionForCpuBackward0")])
def test_attention_uses_the_fused_kernel_of_the_target(target: str, backward: str) -> None:
    b, h, length, d = 1, 8, 4096, 64
    q = torch.empty(b, h, length, d, device="meta", dtype=torch.bfloat16, requires_grad=True)
    saved = SavedBytes([])
    with TargetDevice(target), saved.hooks():
        out = nn.functional.scaled_dot_product_attention(q, q, q)
    assert type(out.grad_fn).__name__ == backward
    # q (= k = v) and the output, plus a float32 log-sum-exp per row: no (L x L) attention matrix is kept
    expected = 2 * rounded(b * h * length * d * 2) + rounded(b * h * length * 4)
    assert expected <= saved.bytes["other"] <= expected + 1024
    assert saved.bytes["other"] < b * h * length * length  # the math kernel would keep ~2 x 256 MiB


def test_checkpoint_recomputes_under_the_emulation() -> None:
    """The backward runs without function modes; a non-reentrant checkpoint recomputes under the forward's
    emulated autocast (else PyTorch raises a CheckpointError: other dtypes, other saved tensors)."""
    lin, ln = nn.Linear(16, 16, device="meta"), nn.LayerNorm(16, device="meta")
    x = torch.empty(4, 16, device="meta", dtype=torch.bfloat16, requires_grad=True)
    with TargetDevice("cuda"), torch.autocast("cuda", dtype=torch.bfloat16):
        y = checkpoint(lambda a: lin(ln(a)), x, use_reentrant=False)
        y.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and lin.weight.grad.dtype == torch.float32


def test_flops_and_saved_bytes_of_a_linear_and_a_conv_on_meta_by_hand() -> None:
    """The planner's counters on the emulated CUDA device against hand computation: a Linear and a 3x3 conv,
    forward and backward under bf16 autocast (weight grads only: the input needs none)."""
    from torch.utils.flop_counter import FlopCounterMode

    b, cin, cout, hw, k = 2, 8, 16, 32, 3
    conv = nn.Conv2d(cin, cout, k, padding=1, device="meta")
    lin = nn.Linear(cout, 4, device="meta")
    x = torch.empty(b, cin, hw, hw, device="meta")
    saved = SavedBytes([conv, lin])
    with TargetDevice("cuda"), FlopCounterMode(display=False) as flops:
        with torch.autocast("cuda", dtype=torch.bfloat16), saved.hooks():
            y = lin(conv(x).permute(0, 2, 3, 1))  # (b, hw, hw, 4)
        assert y.dtype == torch.bfloat16
        y.float().sum().backward()
    conv_fwd = 2 * b * cout * hw * hw * cin * k * k  # one multiply-add per output element and kernel tap
    lin_fwd = 2 * (b * hw * hw) * cout * 4
    # backward: the weight gradients only (same cost as the forward); the conv's input needs no gradient, the
    # linear's input (the conv output) does
    assert flops.get_total_flops() == conv_fwd * 2 + lin_fwd * 3
    # saved for backward, bf16: the conv's cast input (its cast weight is a cast of a parameter: resident in autocast's
    # cache only while the region lasts, and saved), the linear's input and cast weight
    x_bf16 = rounded(b * cin * hw * hw * 2)
    conv_out = rounded(b * cout * hw * hw * 2)
    weights = rounded(cout * cin * k * k * 2) + rounded(4 * cout * 2)
    assert saved.bytes["other"] == x_bf16 + conv_out + weights
    assert conv.weight.grad.dtype == torch.float32 and conv.weight.grad.is_meta


# ------------------------------------------------------------------------------------------- meters
def test_live_bytes_follow_allocations_and_frees() -> None:
    weight = torch.ones(256)
    live = LiveBytes(known=[weight])
    with live:
        view = weight.view(16, 16)  # a view of a known tensor allocates nothing
        assert live.current == 0
        a = torch.empty(1000)  # 4000 bytes -> one 4096-byte block
        b = a * 2
        c = b.view(10, 100)
        del b  # its storage lives on in the view
        assert live.current == 2 * 4096
        del c
        assert live.current == 4096 and live.peak == 2 * 4096
    del a, view


def test_saved_bytes_exclude_parameters() -> None:
    lin = nn.Linear(64, 32)
    x = torch.rand(8, 64, requires_grad=True)
    saved = SavedBytes([lin])
    with saved.hooks():
        torch.relu(lin(x)).sum()
    # linear keeps its input (the weight is a parameter, resident anyway); relu keeps its output
    assert saved.bytes["other"] == rounded(8 * 64 * 4) + rounded(8 * 32 * 4)


def test_fsdp_peak_arithmetic() -> None:
    split = {"sharded_frozen": 8000, "trainable": 400, "max_unit": 300, "replicated": 5000}
    # 4 GPUs: the shards of the 3 other ranks go (3/4 of 8000 + 400 + 800 optimizer), two gathered units come
    assert plan_model.fsdp_peak(20000, split, 800, 0, 4) == 20000 - 9200 * 3 // 4 + 600
    assert plan_model.seconds(989e12 * 0.4) == pytest.approx(1.0)


def test_vlm_flops_match_a_counted_forward() -> None:
    """The live-VLM FLOPs (analytic) against FlopCounterMode on a real forward of a small Qwen3-VL (CPU). At this
    LR size the attention products (which FlopCounterMode does not count on the CPU) are a few %."""
    from torch.utils.flop_counter import FlopCounterMode

    from models.conditions import VLMCondition
    from models.pretrained import Source

    text = {"vocab_size": 64, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "max_position_embeddings": 256,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12],
                                "mrope_interleaved": True}}
    vision = {"depth": 2, "hidden_size": 128, "intermediate_size": 256, "num_heads": 4, "patch_size": 8,
              "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 256,
              "num_position_embeddings": 64, "deepstack_visual_indexes": [0]}
    vlm = {"image_token_id": 60, "video_token_id": 61, "vision_start_token_id": 62, "vision_end_token_id": 63,
           "text_config": text, "vision_config": vision}
    cond = VLMCondition(vlm=Source(config=vlm), prompt_ids=[1, 2, 62, 60, 63, 5, 6, 7, 3], max_tokens=16,
                        dtype="fp32", min_pixels=256).eval()
    lq = torch.rand(1, 3, 64, 64)
    with FlopCounterMode(display=False) as counted:
        features = cond(lq, 1)
    shape, flops = plan_model.VLMStandIn(cond)._shape_and_flops(lq)
    assert shape == tuple(features.shape)
    assert flops == pytest.approx(counted.get_total_flops(), rel=0.15)


# ------------------------------------------------------------------------------------------- predictions
def test_predicted_peak_matches_the_cpu_allocator(tmp_path: Path) -> None:
    """The validation rows in miniature: the prediction (meta, CPU target) of a demo stage-1 step against the peak
    of PyTorch's CPU allocator on a real run of the same module and batches (``benchmarks.plan_validate``)."""
    from benchmarks.plan_validate import measure
    from benchmarks.step_meter import attach_trainer, run_batches, synthetic_batch

    case = plan.VALIDATION_CASES[0]
    cfg = plan.model_config(case, None, fp32=True)
    cfg["init_args"]["accumulate"] = 4  # as the real stage 1: the measured step starts with accumulated gradients
    model = build_module(cfg, "meta")
    attach_trainer(model)
    counters, rebuild, _ = plan.batch_plan(model)
    trace = run_batches(model, [(synthetic_batch(case.crop), c) for c in counters], "cpu", rebuild)
    measured = measure({"model": cfg, "crop": case.crop, "cond": None, "measured": counters, "rebuild": rebuild})
    assert trace["resident_before"]["optimizer"] > 0 and trace["resident_before"]["grads"] > 0  # steady state
    assert trace["peak_bytes"] == pytest.approx(measured["alloc_peak"], rel=0.05)


@pytest.mark.slow  # whole updates emulated on meta, several models
def test_plan_training_rows(tmp_path: Path) -> None:
    rows = plan.plan_training(plan.VALIDATION_CASES[2], tmp_path)  # demo FLUX.2, cached features
    by = {r["update"]: r for r in rows}
    assert set(by) == {"G", "G +D real grad", "D"}
    g, g_real, d = by["G"], by["G +D real grad"], by["D"]
    for r in rows:
        assert r["TFLOP"] > 0 and r["peak_GiB"] >= r["param_GiB"]
        assert r["s_H100"] == pytest.approx(r["TFLOP"] * 1e12 / (989e12 * plan_model.MFU))
        assert r["fsdp8_GiB"] <= r["fsdp4_GiB"] <= r["peak_GiB"] + 1  # more ranks, smaller shards
    assert g_real["act_GiB"] > g["act_GiB"] and g_real["TFLOP"] > g["TFLOP"]
    assert g["trainable_M"] > 0 and d["trainable_M"] > 0 and d["act_GiB"] < g["act_GiB"]


@pytest.mark.slow  # whole updates emulated on meta, several models
def test_plan_dit_stage2_per_chunk_rows(tmp_path: Path) -> None:
    """DiT stage 2 (demo FLUX.2, 192 px in 2 x 2 chunks of 96, cached features) from a zero StrSR stage-1 export
    that the planner writes itself: N^2 = 4 G and 4 D updates per image; per update it costs about what a StrSR
    stage-1 update at the chunk size (96) costs, and its peak stays within 1.5x of that stage 1's."""
    stage2 = plan.Case("s2", "demo/strsr_stage2_flux2.yaml", 192, cached=True, real=False)
    rows = plan.plan_training(stage2, tmp_path)
    lora, mlp = tmp_path / "stage1_demo_strsr_flux2.safetensors", tmp_path / "stage1_demo_strsr_flux2_mlp.safetensors"
    assert lora.is_file() and mlp.is_file()
    by = {r["update"]: r for r in rows}
    assert by["G"]["detail"]["updates"] == {"G": 4, "D": 4} and by["G"]["detail"]["batches"] == 1
    stage1 = {r["update"]: r for r in plan.plan_training(plan.VALIDATION_CASES[2], tmp_path)}  # demo FLUX.2 96
    # the same chunk through the same generator: equal saved activations, and the trained LoRA alone (no MLP)
    assert by["G"]["act_GiB"] == pytest.approx(stage1["G"]["act_GiB"], rel=0.1)
    assert by["G"]["trainable_M"] < stage1["G"]["trainable_M"]
    # a G update of stage 2 also carries a quarter of the (no-grad) stage-1 pass at 96 px
    assert stage1["G"]["TFLOP"] < by["G"]["TFLOP"] < 1.5 * stage1["G"]["TFLOP"]
    assert by["G"]["peak_GiB"] < 1.5 * stage1["G"]["peak_GiB"]
    assert by["D"]["TFLOP"] < stage1["D"]["TFLOP"]  # StrSR's D batch also runs a generator forward


@pytest.mark.slow  # whole updates emulated on meta, several models
def test_plan_strsr_inference_counts_tiles_and_one_vlm_call(tmp_path: Path) -> None:
    """The StrSR predict config (demo size: 96 px tiles, 16 overlap, x4) through ``plan_inference``: a 24 px LR is
    one tile, a 44 px LR (176 px output) 2 x 2 tiles, so the DiT + VAE FLOPs are 4x; the VLM condition runs once
    per image, never per tile; the adapter is the zero export of ``demo/strsr_flux2.yaml`` (LoRA + MLP)."""
    config = "demo/predict_strsr_flux2.yaml"
    one = plan.plan_inference(plan.Case("1 tile", config, 24, real=False), tmp_path)
    four = plan.plan_inference(plan.Case("2x2 tiles", config, 44, real=False), tmp_path)
    assert (tmp_path / "stage1_demo_strsr_flux2.safetensors").is_file()
    assert (tmp_path / "stage1_demo_strsr_flux2_mlp.safetensors").is_file()
    assert one["detail"]["vlm_calls"] == four["detail"]["vlm_calls"] == 1
    # both LRs are below the VLM resize rule's minimum pixel count: the same image tokens
    assert 0 < one["detail"]["vlm_TFLOP"] == four["detail"]["vlm_TFLOP"]
    dit_one = one["TFLOP"] - one["detail"]["vlm_TFLOP"]
    dit_four = four["TFLOP"] - four["detail"]["vlm_TFLOP"]
    assert dit_four == pytest.approx(4 * dit_one, rel=0.02)
    # the tile, not the image, sets the peak: what grows is a few output-size fp32 images (the bicubic input, the
    # blend's sum and weights), not the networks' activations
    rgb_gib = 3 * 4 / 2**30  # one fp32 RGB pixel
    growth = four["peak_GiB"] - one["peak_GiB"]
    assert 0 <= growth < rgb_gib * (4 * 176**2 - 2 * 96**2)


@pytest.mark.slow
def test_plan_command_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m benchmarks.plan`` on a subset: a real-size FLUX.2 case, a Table 3 row and a measured validation
    row (a fresh process), printed and written."""
    from benchmarks import common

    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    out = plan.main(["--quick", "--cases", "FLUX.2 1024 cached GC", "x4 128", "demo stage1"])
    g = next(r for r in out["train"] if r["update"] == "G")
    assert g["trainable_M"] > 300 and g["params_M"] > 4000  # klein-4B + its rank-256 LoRA
    assert g["fsdp8_GiB"] < g["fsdp4_GiB"] < g["peak_GiB"] < 80
    assert out["infer"][0]["paper_s_H800"] == 0.0596
    (row,) = out["validation"]
    assert abs(row["alloc_err_%"]) < 25
    assert len(list(tmp_path.glob("plan-*.json"))) == 1
