"""OneStepSDGenerator (TUDSR eq. 2) with tiny random-init SD components on CPU."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from models import lora as L
from models.generators import OneStepSDGenerator, compute_prompt_embedding, empty_prompt_ids, load_scheduler
from models.pretrained import MissingWeightsError, Source


SD21_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def tiny_configs() -> dict[str, dict]:
    """Tiny architectures of the SD2.1 classes. VAE: 2 blocks -> factor 2 (SD: 4 blocks, factor 8); UNet: 2 blocks,
    one cross-attention level; CLIP text: width 32 = cross_attention_dim, special ids inside the vocabulary."""
    return {
        "unet": dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=[32, 64],
                     down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                     up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim=32,
                     attention_head_dim=8, norm_num_groups=8, use_linear_projection=True),
        "vae": dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                    up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[16, 32], layers_per_block=1,
                    latent_channels=4, norm_num_groups=8, sample_size=16, scaling_factor=0.18215),
        "scheduler": dict(SD21_SCHEDULER),
        "text_encoder": dict(vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                             num_attention_heads=4, max_position_embeddings=77, bos_token_id=998, eos_token_id=999,
                             pad_token_id=0),
    }


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    """A local diffusers-style repo (unet/, vae/, scheduler/) with fixed random weights."""
    cfg, root = tiny_configs(), tmp_path_factory.mktemp("tiny_sd")
    torch.manual_seed(0)
    UNet2DConditionModel.from_config(cfg["unet"]).save_pretrained(root / "unet")
    AutoencoderKL.from_config(cfg["vae"]).save_pretrained(root / "vae")
    DDPMScheduler.from_config(cfg["scheduler"]).save_pretrained(root / "scheduler")
    return root


def make_gen(root, **kwargs) -> OneStepSDGenerator:
    torch.manual_seed(0)  # the text encoder (config) and LoRA inits are random
    args = dict(vae=Source(pretrained=str(root), subfolder="vae"), unet=Source(pretrained=str(root), subfolder="unet"),
                scheduler=Source(pretrained=str(root), subfolder="scheduler"),
                text_encoder=Source(config=tiny_configs()["text_encoder"]), prompt_cache=str(root / "empty.safetensors"))
    args.update(kwargs)
    return OneStepSDGenerator(**args)


def lora_cfg(**kw) -> L.LoraConfig:
    return L.LoraConfig(**{"rank": 4, **kw})


def randomize(gen: OneStepSDGenerator, name: str, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in L.adapter_named_parameters(gen.unet, name):
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def image(seed: int = 0, batch: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))  # (B, 3, H, W)


def test_sd21_scheduler_values():
    abar = load_scheduler(Source(config=SD21_SCHEDULER)).alphas_cumprod
    assert abs(abar[0].item() - 0.999150) < 5e-7 and abs(abar[999].item() - 0.004660) < 5e-7


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_one_step_formula_equals_ddpm_step(sd_dir, prediction_type):
    sched_cfg = {**SD21_SCHEDULER, "prediction_type": prediction_type}
    gen = make_gen(sd_dir, scheduler=Source(config=sched_cfg), lora=lora_cfg()).eval()
    randomize(gen, "stage1", 1)
    scheduler = DDPMScheduler.from_config(sched_cfg)
    z = gen.encode(image())  # (2, 4, 8, 8)
    for t in (200, 50):
        with torch.no_grad():
            out = gen.unet(z, t, encoder_hidden_states=gen.prompt_embeds.expand(2, -1, -1)).sample
            ours = gen.denoise(z, timestep=t)
        ref = scheduler.step(out, t, z, generator=torch.Generator().manual_seed(0)).pred_original_sample
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_forward_matches_hand_pipeline(sd_dir):
    gen = make_gen(sd_dir, lora=lora_cfg()).eval()
    randomize(gen, "stage1", 2)
    x = image()
    with torch.no_grad():
        sr = gen(x)
        z = gen.vae.encode(2 * x - 1).latent_dist.mode() * 0.18215
        eps = gen.unet(z, 200, encoder_hidden_states=gen.prompt_embeds.expand(2, -1, -1)).sample
        abar = DDPMScheduler.from_config(SD21_SCHEDULER).alphas_cumprod[200]
        z0 = (z - (1 - abar).sqrt() * eps) / abar.sqrt()
        ref = (gen.vae.decode(z0 / 0.18215).sample.clamp(-1, 1) + 1) / 2
    assert sr.shape == x.shape and sr.dtype == torch.float32 and 0 <= sr.min() and sr.max() <= 1
    torch.testing.assert_close(sr, ref, rtol=1e-5, atol=1e-5)
    gen.train()  # latent_mode "sample": the posterior is sampled in training, never in eval
    assert not gen.vae.training and gen.unet.training
    with torch.no_grad():
        assert not torch.equal(gen(x), gen(x))
    with pytest.raises(ValueError, match="divisible"):
        gen(image(size=15))


def test_only_lora_receives_gradients_and_changes(sd_dir):
    gen = make_gen(sd_dir, lora=lora_cfg()).train()
    trainable = dict(gen.trainable_named_parameters())
    assert trainable and all(".lora_A.stage1." in n or ".lora_B.stage1." in n for n in trainable)
    assert {n for n, p in gen.named_parameters() if p.requires_grad} == set(trainable)
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    embeds = gen.prompt_embeds.clone()
    opt = torch.optim.AdamW(trainable.values(), lr=1e-3)
    (gen(image()) - image(1)).abs().mean().backward()
    opt.step()
    for name, p in gen.named_parameters():
        assert (p.grad is not None) == (name in trainable), name
    after = gen.state_dict()
    assert set(after) == set(before) and not any(k.startswith("prompt_embeds") for k in after)
    for key, value in after.items():
        if f"unet.{key.removeprefix('unet.')}" in trainable and ".lora_B." in key:
            assert not torch.equal(value, before[key]), key
        elif key not in trainable:
            assert torch.equal(value, before[key]), key  # VAE and UNet base byte-identical
    assert torch.equal(gen.prompt_embeds, embeds)


def test_bf16_base_keeps_fp32_lora(sd_dir):
    gen = make_gen(sd_dir, lora=lora_cfg(), dtype="bf16").train()
    lora_names = {n for n, _ in gen.trainable_named_parameters()}
    for name, p in gen.named_parameters():
        assert p.dtype == (torch.float32 if name in lora_names else torch.bfloat16), name
    sr = gen(image())
    assert sr.dtype == torch.float32 and sr.shape == (2, 3, 16, 16)
    sr.mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for _, p in gen.trainable_named_parameters())


def test_exported_adapter_reloads_into_fresh_unet(sd_dir, tmp_path):
    gen = make_gen(sd_dir, lora=lora_cfg(alpha=8)).eval()  # alpha != rank: the file's metadata matters
    randomize(gen, "stage1", 3)
    file = gen.export_adapter(tmp_path / "stage1.safetensors")
    x = image()
    with torch.no_grad():
        ref_sr = gen(x)
        z = gen.encode(x)
        cond = gen.prompt_embeds.expand(2, -1, -1)
        ref_eps = gen.unet(z, 200, encoder_hidden_states=cond).sample
    unet = UNet2DConditionModel.from_pretrained(sd_dir / "unet")  # plain diffusers, same base weights
    unet.load_lora_adapter(str(file), prefix=None, adapter_name="stage1", use_safetensors=True)
    with torch.no_grad():
        torch.testing.assert_close(unet(z, 200, encoder_hidden_states=cond).sample, ref_eps, rtol=0, atol=1e-5)
    other = make_gen(sd_dir).eval()
    assert other.adapter_name is None and not list(other.trainable_named_parameters())
    other.load_adapter(file, "stage1")
    assert other.active_adapter == "stage1" and not any(p.requires_grad for p in other.parameters())
    with torch.no_grad():
        torch.testing.assert_close(other(x), ref_sr, rtol=0, atol=1e-5)


def test_two_adapters_switch_like_two_unets(sd_dir, tmp_path):
    gen = make_gen(sd_dir, lora=lora_cfg()).eval()
    randomize(gen, "stage1", 4)
    gen.add_adapter("stage2", lora_cfg(rank=2))
    randomize(gen, "stage2", 5)
    assert gen.adapters == ["stage1", "stage2"] and gen.adapter_name == "stage2" == gen.active_adapter
    files = {n: gen.export_adapter(tmp_path / f"{n}.safetensors", n) for n in ("stage1", "stage2")}
    x = image()
    with torch.no_grad():
        z = gen.encode(x)
        ours = {n: gen.denoise(z, adapter_name=n, timestep=t) for n, t in (("stage1", 200), ("stage2", 50))}
        gen.set_adapter(None)
        bare = gen.denoise(z)
    assert gen.active_adapter is None
    for name, t in (("stage1", 200), ("stage2", 50)):
        single = make_gen(sd_dir).eval()
        single.load_adapter(files[name], name)
        with torch.no_grad():
            torch.testing.assert_close(single.denoise(z, timestep=t), ours[name], rtol=0, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(make_gen(sd_dir).eval().denoise(z), bare, rtol=0, atol=1e-5)
    assert not torch.allclose(ours["stage1"], gen.denoise(z, "stage1", 50))  # timestep matters


def test_stage1_adapter_bit_identical_while_training_stage2(sd_dir, tmp_path):
    src = make_gen(sd_dir, lora=lora_cfg())
    randomize(src, "stage1", 6)
    file = src.export_adapter(tmp_path / "stage1.safetensors")
    gen = make_gen(sd_dir, lora=lora_cfg(), adapter_name="stage2").train()
    gen.load_adapter(file, "stage1", trainable=False)
    assert gen.adapter_name == "stage2" and gen.active_adapter == "stage1"
    params = dict(gen.trainable_named_parameters())
    assert params and all(".stage2." in n for n in params)
    stage1 = {n: p.detach().clone() for n, p in L.adapter_named_parameters(gen.unet, "stage1")}
    opt = torch.optim.AdamW(params.values(), lr=1e-3)
    for _ in range(2):  # stage-1 pass deliberately with grad enabled: its LoRA must still get none
        m = gen.decode(gen.denoise(gen.encode(image()), adapter_name="stage1", timestep=200))
        sr = gen.decode(gen.denoise(gen.encode(m), adapter_name="stage2", timestep=50))
        (sr - image(1)).abs().mean().backward()
        opt.step()
        opt.zero_grad()
    for name, p in L.adapter_named_parameters(gen.unet, "stage1"):
        assert p.grad is None and not p.requires_grad and torch.equal(p, stage1[name]), name
    assert all(p.requires_grad for p in params.values())


def test_gradient_checkpointing_same_gradients(sd_dir):
    grads = []
    for ckpt in (False, True):
        gen = make_gen(sd_dir, lora=lora_cfg(), latent_mode="mode", gradient_checkpointing=ckpt).train()
        randomize(gen, "stage1", 7)
        gen(image()).square().mean().backward()
        grads.append({n: p.grad for n, p in gen.trainable_named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-7)


def test_missing_hub_weights_name_the_component(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # default: offline, hub cache only
    repo = "onestep-sr-tests/no-such-sd21-base"
    with pytest.raises(MissingWeightsError, match="SD2.1-base UNet") as err:
        OneStepSDGenerator(vae=Source(pretrained=repo, subfolder="vae"), unet=Source(pretrained=repo, subfolder="unet"),
                           scheduler=Source(pretrained=repo, subfolder="scheduler"))
    assert repo in str(err.value) and "offline" in str(err.value)


def test_prompt_embedding_tiny_text_encoder_and_cache(tmp_path):
    cfg = CLIPTextConfig(**tiny_configs()["text_encoder"])
    ids = empty_prompt_ids(cfg)
    assert ids.shape == (1, 77) and ids[0, :3].tolist() == [998, 999, 0] and (ids[0, 2:] == 0).all()
    torch.manual_seed(0)
    encoder = CLIPTextModel(cfg).eval()
    with torch.no_grad():
        ref = encoder(ids).last_hidden_state  # (1, 77, 32)
    cache = tmp_path / "prompt.safetensors"
    torch.manual_seed(0)
    embeds = compute_prompt_embedding(Source(config=tiny_configs()["text_encoder"]), cache=str(cache))
    torch.testing.assert_close(embeds, ref, rtol=0, atol=1e-6)
    # second call reads the cache: a missing text encoder is never loaded
    again = compute_prompt_embedding(Source(pretrained="onestep-sr-tests/missing-clip"), cache=str(cache))
    assert torch.equal(again, embeds)
    with pytest.raises(ValueError, match="not of 'a photo'"):
        compute_prompt_embedding(prompt="a photo", cache=str(cache))
    with pytest.raises(ValueError, match="tokenizer"):
        compute_prompt_embedding(Source(config=tiny_configs()["text_encoder"]), prompt="a photo")
    assert torch.equal(compute_prompt_embedding(shape=(1, 77, 8)), torch.zeros(1, 77, 8))
    bad = {**tiny_configs()["text_encoder"], "bos_token_id": 49406}
    with pytest.raises(ValueError, match="bos_token_id"):
        compute_prompt_embedding(Source(config=bad))


def test_all_from_configs_and_no_text_encoder():
    cfg = tiny_configs()
    torch.manual_seed(0)
    gen = OneStepSDGenerator(vae=Source(config=cfg["vae"]), unet=Source(config=cfg["unet"]),
                             scheduler=Source(config=cfg["scheduler"]), lora=lora_cfg(), timestep=200).eval()
    assert torch.equal(gen.prompt_embeds, torch.zeros(1, 77, 32))  # null condition without a text encoder
    assert (gen.vae_scale_factor, gen.pixel_multiple, gen.scaling_factor) == (2, 4, 0.18215)
    with torch.no_grad():
        assert gen(image(batch=1, size=12)).shape == (1, 3, 12, 12)
    with pytest.raises(ValueError, match="timestep"):
        gen.denoise(torch.zeros(1, 4, 6, 6), timestep=1000)
