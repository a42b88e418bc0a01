"""models/lora.py on a tiny diffusers UNet: selection by name, fp32 over bf16, diffusers-format files."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors import safe_open

from models import lora as L



def tiny_unet_config() -> dict:
    return dict(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8, use_linear_projection=True,
    )


TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2", "conv_in", "proj_in", "ff.net.2"]


@pytest.fixture(scope="module")
def unet_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_unet")
    UNet2DConditionModel.from_config(tiny_unet_config()).save_pretrained(path)
    return path


def fresh(unet_dir, dtype=torch.float32) -> UNet2DConditionModel:
    return UNet2DConditionModel.from_pretrained(unet_dir, torch_dtype=dtype)


def randomize(model, name: str, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in L.adapter_named_parameters(model, name):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def run(model, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    z, c = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 77, 32, generator=gen)
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        return model(z.to(dtype), 10, encoder_hidden_states=c.to(dtype)).sample.float()


def test_config_to_peft():
    cfg = L.LoraConfig(rank=8, target_modules=["to_q"]).to_peft()
    assert (cfg.r, cfg.lora_alpha, cfg.init_lora_weights) == (8, 8, "gaussian")
    assert L.LoraConfig(rank=4, alpha=16, init="default", target_modules=["to_q"]).to_peft().init_lora_weights is True
    assert set(L.LoraConfig(target_modules=None).to_peft(["conv1"]).target_modules) == {"conv1"}
    with pytest.raises(ValueError, match="target_modules"):
        L.LoraConfig().to_peft()


def test_selection_by_name_and_gaussian_init(unet_dir):
    unet = fresh(unet_dir)
    base = run(unet)
    L.add_adapter(unet, L.LoraConfig(rank=4, target_modules=TARGETS), "one")
    L.add_adapter(unet, L.LoraConfig(rank=4, target_modules=TARGETS), "one_b")  # "one" is a prefix of "one_b"
    names_a = [n for n, _ in L.adapter_named_parameters(unet, "one")]
    names_ab = [n for n, _ in L.adapter_named_parameters(unet, "one_b")]
    assert names_a and len(names_a) == len(names_ab) and not set(names_a) & set(names_ab)
    assert all(".lora_A.one." in n or ".lora_B.one." in n for n in names_a)
    assert L.adapter_names(unet) == ["one", "one_b"]
    # one A and one B per targeted module; gaussian init: B = 0, so the adapter starts as the identity edit
    assert sum(".lora_B.one." in n for n in names_a) == len(names_a) // 2
    assert all(torch.count_nonzero(p) == 0 for n, p in L.adapter_named_parameters(unet, "one") if ".lora_B." in n)
    torch.testing.assert_close(run(unet), base, rtol=0, atol=0)
    # peft activated and unfroze only the newest; set_trainable states it by name
    assert {n for n, p in unet.named_parameters() if p.requires_grad} == set(names_ab)
    unet.set_adapter("one")  # peft flips requires_grad to "one"
    L.set_trainable(unet, "one_b")
    assert {n for n, p in unet.named_parameters() if p.requires_grad} == set(names_ab)
    L.set_trainable(unet, None)
    assert not any(p.requires_grad for p in unet.parameters())


def test_fp32_lora_on_bf16_base(unet_dir):
    unet = fresh(unet_dir, torch.bfloat16)
    L.add_adapter(unet, L.LoraConfig(rank=4, target_modules=TARGETS), "one")
    lora_names = {n for n, _ in L.adapter_named_parameters(unet, "one")}
    assert lora_names and all(p.dtype == torch.float32 for _, p in L.adapter_named_parameters(unet, "one"))
    assert all(p.dtype == torch.bfloat16 for n, p in unet.named_parameters() if n not in lora_names)
    randomize(unet, "one", 0)
    z = torch.randn(1, 4, 8, 8, dtype=torch.bfloat16)
    c = torch.randn(1, 77, 32, dtype=torch.bfloat16)
    unet(z, 10, encoder_hidden_states=c).sample.float().square().mean().backward()
    grads = [p.grad for _, p in L.adapter_named_parameters(unet, "one")]
    assert all(g is not None and g.dtype == torch.float32 for g in grads)


def test_file_matches_diffusers_and_roundtrips(unet_dir, tmp_path):
    unet = fresh(unet_dir)
    L.add_adapter(unet, L.LoraConfig(rank=4, alpha=8, target_modules=TARGETS), "one")  # scaling 2: needs metadata
    randomize(unet, "one", 1)
    ref = run(unet)
    ours = L.save_adapter(unet, "one", tmp_path / "ours.safetensors")
    unet.save_lora_adapter(tmp_path / "theirs", adapter_name="one")
    with safe_open(str(ours), "pt") as f1, safe_open(str(tmp_path / "theirs" / L.LORA_WEIGHT_NAME), "pt") as f2:
        assert set(f1.keys()) == set(f2.keys()) and all(torch.equal(f1.get_tensor(k), f2.get_tensor(k)) for k in f1.keys())
        assert all(".lora_A.weight" in k or ".lora_B.weight" in k for k in f1.keys())
        meta1, meta2 = (json.loads(f.metadata()["lora_adapter_metadata"]) for f in (f1, f2))
        assert f1.metadata()["format"] == "pt"
    assert (meta1["r"], meta1["lora_alpha"]) == (4, 8)
    assert meta1 == {k: (sorted(v) if k == "target_modules" else v) for k, v in meta2.items()}

    # plain diffusers on a fresh UNet, and our loader (directory form too)
    other = fresh(unet_dir)
    other.load_lora_adapter(str(ours), prefix=None, adapter_name="copy", use_safetensors=True)
    torch.testing.assert_close(run(other), ref, rtol=0, atol=1e-5)
    third = fresh(unet_dir)
    L.load_adapter(third, tmp_path / "theirs", "one")
    torch.testing.assert_close(run(third), ref, rtol=0, atol=1e-5)
    assert not any(p.requires_grad for _, p in L.adapter_named_parameters(third, "one"))

    # the pipelines' "unet." prefix convention
    L.save_adapter(unet, "one", tmp_path / "prefixed.safetensors", prefix="unet")
    fourth = fresh(unet_dir)
    fourth.load_lora_adapter(str(tmp_path / "prefixed.safetensors"), prefix="unet", adapter_name="one", use_safetensors=True)
    torch.testing.assert_close(run(fourth), ref, rtol=0, atol=1e-5)


def test_load_keeps_fp32_precision_and_trainable_flag(unet_dir, tmp_path):
    unet = fresh(unet_dir)
    L.add_adapter(unet, L.LoraConfig(rank=4, target_modules=TARGETS), "one")
    randomize(unet, "one", 2)
    file = L.save_adapter(unet, "one", tmp_path / "a.safetensors")
    saved = L.adapter_state_dict(unet, "one")
    base = fresh(unet_dir, torch.bfloat16)
    L.add_adapter(base, L.LoraConfig(rank=4, target_modules=TARGETS), "two")
    L.load_adapter(base, file, "one", trainable=False)
    loaded = L.adapter_state_dict(base, "one")
    assert set(loaded) == set(saved)
    assert all(loaded[k].dtype == torch.float32 and torch.equal(loaded[k], saved[k]) for k in saved)
    assert not any(p.requires_grad for _, p in L.adapter_named_parameters(base, "one"))
    assert all(p.requires_grad for _, p in L.adapter_named_parameters(base, "two"))  # untouched
    L.load_adapter(base, file, "three", trainable=True)
    assert all(p.requires_grad for _, p in L.adapter_named_parameters(base, "three"))
    with pytest.raises(ValueError, match="already"):
        L.add_adapter(base, L.LoraConfig(rank=4, target_modules=TARGETS), "three")
    with pytest.raises(FileNotFoundError):
        L.load_adapter(base, tmp_path / "nope.safetensors", "four")
