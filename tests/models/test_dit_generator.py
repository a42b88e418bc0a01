"""OneStepDiTGenerator: trainable parameters, frozen parts, tiled inference, cached features, adapter export."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from models.conditions import TextEmbeddingCondition, VLMCondition
from models.generators.dit_onestep import OneStepDiTGenerator, resolve_lora_targets
from models.generators.flux2_backend import FLUX2_LORA_TARGETS, Flux2Backend
from models.generators.zimage_backend import ZIMAGE_LORA_TARGETS, ZImageBackend
from models.lora import LoraConfig
from models.pretrained import Source
from tiny_models import TINY_VAE, TINY_FLUX2, TINY_ZIMAGE, TINY_QWEN3_VL, PROMPT_IDS



def flux2_backend(**kw) -> Flux2Backend:
    return Flux2Backend(Source(config=TINY_FLUX2), Source(config=dict(TINY_VAE, latent_channels=32)), dtype="fp32",
                        **kw)


def vlm_condition() -> VLMCondition:
    return VLMCondition(Source(config=TINY_QWEN3_VL), prompt_ids=PROMPT_IDS, dtype="fp32", min_pixels=16 * 16)


@pytest.fixture(scope="module")
def gen() -> OneStepDiTGenerator:
    torch.manual_seed(0)
    return OneStepDiTGenerator(flux2_backend(), vlm_condition(), sigma=0.8, lora=LoraConfig(rank=4, alpha=4))


def _inputs(b: int = 1, h: int = 8, w: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    lq = torch.rand(b, 3, h, w)
    return F.interpolate(lq, scale_factor=4, mode="bicubic").clamp(0, 1), lq


def test_lora_targets_resolve_to_linear_layers(gen: OneStepDiTGenerator) -> None:
    flux = resolve_lora_targets(gen.backend.transformer, FLUX2_LORA_TARGETS)
    assert "single_transformer_blocks.0.attn.to_out" in flux  # a Linear in single blocks
    assert "transformer_blocks.0.attn.to_out" not in flux and "transformer_blocks.0.attn.to_out.0" in flux
    assert "transformer_blocks.0.attn.to_add_out" in flux and "single_transformer_blocks.0.attn.to_qkv_mlp_proj" in flux
    assert len(flux) == 10  # 8 in the double block + 2 in the single block
    z = ZImageBackend(Source(config=TINY_ZIMAGE), Source(config=dict(TINY_VAE, latent_channels=16)), dtype="fp32")
    names = resolve_lora_targets(z.transformer, ZIMAGE_LORA_TARGETS)
    assert "layers.0.feed_forward.w2" in names and "layers.0.attention.to_out.0" in names
    assert gen.mlp is not None and (gen.mlp.in_dim, gen.mlp.out_dim, gen.mlp.hidden) == (24, 32, 16)


def test_lora_targets_equal_the_released_resolution(gen: OneStepDiTGenerator) -> None:
    """The released StrSR code (jkwang28/StrSR at commit 46e57115de967b19bb27c5c783bc5bcb819c86a4) resolves FLUX.2's
    patterns itself (``HYPIR/trainer/flux_vlm.py`` ``_resolve_lora_targets``: Linear/Conv modules whose name ends
    with a pattern, no dot boundary) and hands Z-Image's patterns to peft (``HYPIR/trainer/zimage_vlm.py``). Our
    dot-boundary resolution to Linear layers gives the same modules on both tiny backbones."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    def released_resolution(model: torch.nn.Module, patterns: tuple[str, ...]) -> list[str]:
        kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
        return sorted({n for n, m in model.named_modules() if isinstance(m, kinds)
                       and any(n.endswith(p) for p in patterns) and ".lora_" not in n and not n.endswith("base_layer")})

    fresh = flux2_backend()
    assert resolve_lora_targets(fresh.transformer, FLUX2_LORA_TARGETS) == released_resolution(fresh.transformer,
                                                                                               FLUX2_LORA_TARGETS)
    z = ZImageBackend(Source(config=TINY_ZIMAGE), Source(config=dict(TINY_VAE, latent_channels=16)), dtype="fp32")
    ours = resolve_lora_targets(z.transformer, ZIMAGE_LORA_TARGETS)
    peft_model = get_peft_model(copy.deepcopy(z.transformer), PeftLoraConfig(
        r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=list(ZIMAGE_LORA_TARGETS)))
    adapted = sorted(n.removeprefix("base_model.model.") for n, m in peft_model.named_modules()
                     if isinstance(getattr(m, "lora_A", None), torch.nn.ModuleDict) and len(m.lora_A) > 0)
    assert ours == adapted and len(ours) > 7


def test_only_lora_and_mlp_receive_gradients_and_change(gen: OneStepDiTGenerator) -> None:
    g = copy.deepcopy(gen)
    g.train()
    assert g.training and not g.backend.training and not g.backend.transformer.training
    assert not g.backend.vae.training and not g.condition.vlm.training
    trainable = dict(g.trainable_named_parameters())
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values())
    assert any(".lora_A.strsr." in n for n in trainable) and any(n.startswith("mlp.") for n in trainable)
    before = {n: p.detach().clone() for n, p in g.named_parameters()}
    buffers_before = {n: b.clone() for n, b in g.named_buffers()}
    opt = torch.optim.AdamW(trainable.values(), lr=1e-2, weight_decay=0.0)
    lq_up, lq = _inputs(2)
    (g(lq_up, lq) - lq_up).abs().mean().backward()
    for name, p in g.named_parameters():
        assert (p.grad is not None) == (name in trainable), name
        assert p.requires_grad == (name in trainable), name
    opt.step()
    for name, p in g.named_parameters():
        changed = not torch.equal(p.detach(), before[name])
        if name in trainable and (".lora_B." in name or name.startswith("mlp.")):
            assert changed, name  # B starts at 0 (gaussian init), so only B moves on the first step
        elif name not in trainable:
            assert not changed, name  # transformer base, VAE and VLM byte-identical
    for name, buf in g.named_buffers():
        assert torch.equal(buf, buffers_before[name]), name  # e.g. the VAE BatchNorm statistics


def test_forward_shapes_padding_and_determinism(gen: OneStepDiTGenerator) -> None:
    gen.eval()
    lq_up, lq = _inputs(1, 9, 7, seed=1)  # 36 x 28: not multiples of 16 -> reflect-padded, cropped back
    with torch.no_grad():
        a, b = gen(lq_up, lq), gen(lq_up, lq)
    assert a.shape == lq_up.shape and 0 <= a.min() and a.max() <= 1
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # eval encodes with the mode: deterministic


def test_training_output_is_unclamped_unless_clamp_train(gen: OneStepDiTGenerator) -> None:
    """The released trainer computes its losses and the discriminator input on the unclamped decoder output
    (jkwang28/StrSR, HYPIR/trainer/base.py, ``optimize_generator_image``): so does ours by default; evaluation
    clamps, and ``clamp_train`` restores clamping in training."""
    lq_up, lq = _inputs(1, 8, 8, seed=4)
    cond = gen.encode_condition(lq, 1)
    with torch.no_grad():
        gen.train()
        torch.manual_seed(9)
        train_out = gen.restore(lq_up, cond)
        gen.clamp_train = True
        try:
            torch.manual_seed(9)
            clamped = gen.restore(lq_up, cond)
        finally:
            gen.clamp_train = False
        gen.eval()
        eval_out = gen.restore(lq_up, cond)
    assert gen.clamp_train is False  # the default
    assert ((train_out < 0) | (train_out > 1)).any()  # the random decoder overshoots [0, 1]
    torch.testing.assert_close(clamped, train_out.clamp(0, 1), rtol=0, atol=0)
    assert 0 <= eval_out.min() and eval_out.max() <= 1


def test_tiled_forward_single_tile_equals_forward_and_condition_runs_once(gen: OneStepDiTGenerator) -> None:
    gen.eval()
    lq_up, lq = _inputs(1, 8, 8, seed=2)
    calls = []
    hook = gen.condition.register_forward_hook(lambda m, a, o: calls.append(1))
    try:
        with torch.no_grad():
            full = gen(lq_up, lq)
            tiled = gen.tiled_forward(lq_up, lq, tile=64, overlap=16)
            assert torch.equal(tiled, full)
            calls.clear()
            big_up, big = _inputs(1, 12, 12, seed=3)  # 48 x 48 in 32-pixel tiles: 2 x 2 tiles
            out = gen.tiled_forward(big_up, big, tile=32, overlap=16)
    finally:
        hook.remove()
    assert len(calls) == 1 and out.shape == big_up.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError):
        gen.tiled_forward(big_up, big, tile=40, overlap=8)


def test_cached_features_replace_the_vlm(gen: OneStepDiTGenerator) -> None:
    gen.eval()
    lq_up, lq = _inputs(2, 8, 8, seed=4)
    with torch.no_grad():
        feats = gen.condition(lq, 2)
        torch.testing.assert_close(gen(lq_up, None, cond_features=feats), gen(lq_up, lq))


def test_export_and_load_reproduce_outputs(gen: OneStepDiTGenerator, tmp_path) -> None:
    g = copy.deepcopy(gen).eval()
    with torch.no_grad():  # make the adapter non-trivial (lora_B starts at zero)
        for name, p in g.trainable_named_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    lq_up, lq = _inputs(1, 8, 8, seed=5)
    with torch.no_grad():
        ref = g(lq_up, lq)
    files = g.export_adapter(tmp_path / "export")
    assert sorted(f.name for f in files) == ["adapter_mlp.safetensors", "pytorch_lora_weights.safetensors"]
    assert g.export_adapter(tmp_path / "w.safetensors")[1].name == "w_mlp.safetensors"

    # Inference: a fresh generator without LoRA on an identically built base loads the export as a new adapter.
    torch.manual_seed(0)
    fresh = OneStepDiTGenerator(flux2_backend(), gen.condition, lora=None).eval()
    base = {n.replace(".base_layer", ""): p for n, p in gen.backend.named_parameters() if "lora_" not in n}
    fresh_base = dict(fresh.backend.named_parameters())
    assert base.keys() == fresh_base.keys() and all(torch.equal(p, fresh_base[n]) for n, p in base.items())
    with torch.no_grad():
        assert not torch.allclose(fresh(lq_up, lq), ref, atol=1e-4)
    fresh.load_adapter(tmp_path / "export")
    with torch.no_grad():
        torch.testing.assert_close(fresh(lq_up, lq), ref, rtol=1e-5, atol=1e-6)

    # Resume: a generator with the adapter already in place loads the weights into it (file-path variant).
    resumed = copy.deepcopy(gen).eval()
    resumed.load_adapter(tmp_path / "w.safetensors", trainable=True)
    with torch.no_grad():
        torch.testing.assert_close(resumed(lq_up, lq), ref, rtol=1e-5, atol=1e-6)
    assert all(p.requires_grad for _, p in resumed.trainable_named_parameters())


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        g = OneStepDiTGenerator(flux2_backend(gradient_checkpointing=ckpt), TextEmbeddingCondition(dim=16, length=3),
                                lora=LoraConfig(rank=4, alpha=4), sample_latents=False).train()
        assert g.backend.transformer.gradient_checkpointing is ckpt
        with torch.no_grad():
            for _, p in g.trainable_named_parameters():
                p.add_(torch.randn_like(p) * 0.05)
        lq_up, _ = _inputs(1, 4, 4, seed=6)
        g(lq_up).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in g.trainable_named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["flux2", "zimage"])
def test_bf16_base_with_fp32_lora_trains_only_adapter(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "flux2":
        backend = Flux2Backend(Source(config=TINY_FLUX2), Source(config=dict(TINY_VAE, latent_channels=32)), dtype="bf16")
    else:
        backend = ZImageBackend(Source(config=TINY_ZIMAGE), Source(config=dict(TINY_VAE, latent_channels=16)),
                                dtype="bf16")
    cond = TextEmbeddingCondition(dim=16, length=3)
    cond.embedding.normal_()  # a non-zero prompt embedding, so every MLP weight gets a gradient
    g = OneStepDiTGenerator(backend, cond, lora=LoraConfig(rank=4, alpha=4)).train()
    assert g.mlp is not None  # 16-wide embedding != 32-wide text input: an MLP maps it
    trainable = dict(g.trainable_named_parameters())
    assert all(p.dtype == torch.float32 for p in trainable.values())
    assert all(p.dtype == torch.bfloat16 for n, p in g.backend.named_parameters() if "lora_" not in n)
    with torch.no_grad():
        for p in trainable.values():
            p.add_(torch.randn_like(p) * 0.05)
    lq_up, _ = _inputs(1, 4, 4, seed=7)
    out = g(lq_up)
    assert out.dtype == torch.float32 and out.shape == lq_up.shape
    out.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable.values())
    assert all(p.grad is None for n, p in g.named_parameters() if n not in trainable)


def test_named_adapters_switch_like_the_sd_generator(tmp_path) -> None:
    """A second adapter loaded under another name becomes active; set_adapter switches between the two (and to the
    bare transformer); the trained adapter stays the only LoRA that requires grad."""
    torch.manual_seed(0)
    cond = TextEmbeddingCondition(dim=32, length=3)
    g = OneStepDiTGenerator(flux2_backend(), cond, lora=LoraConfig(rank=4, alpha=4), sample_latents=False).eval()
    assert g.active_adapter == "strsr" and g.adapters == ["strsr"]
    with torch.no_grad():
        for _, p in g.trainable_named_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    lq_up, _ = _inputs(1, 4, 4, seed=8)
    with torch.no_grad():
        trained = g(lq_up)
    g.export_adapter(tmp_path / "a.safetensors")
    with torch.no_grad():
        for _, p in g.trainable_named_parameters():
            p.add_(torch.randn_like(p) * 0.05)  # the trained adapter moves on; the file keeps the old weights
    g.load_adapter(tmp_path / "a.safetensors", "frozen")
    assert g.active_adapter == "frozen" and g.adapters == ["strsr", "frozen"]
    with torch.no_grad():
        torch.testing.assert_close(g(lq_up), trained, rtol=1e-5, atol=1e-6)  # the loaded copy runs
        g.set_adapter("strsr")
        moved = g(lq_up)
        g.set_adapter(None)
        bare = g(lq_up)
    assert g.active_adapter is None
    assert not torch.allclose(moved, trained, atol=1e-4) and not torch.allclose(bare, moved, atol=1e-4)
    requires_grad = {n for n, p in g.backend.transformer.named_parameters() if p.requires_grad}
    assert requires_grad == {n.removeprefix("backend.transformer.") for n, _ in g.trainable_named_parameters()
                             if n.startswith("backend.transformer.")}
    assert all(".strsr." in n for n in requires_grad)
    with pytest.raises(ValueError, match="adapter 'nope' not found"):
        g.set_adapter("nope")
