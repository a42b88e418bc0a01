"""DINOv3 discriminator backbone + heads on a tiny random-init DINOv3ViTModel (TUDSR paper 3.5)."""

import pytest
import torch

from models.discriminators import DINOv3Discriminator, DINOv3Features
from models.pretrained import MissingWeightsError, Source

TINY = dict(
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=2,
    intermediate_size=64,
    patch_size=16,
    num_register_tokens=4,
)
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def disc() -> DINOv3Discriminator:
    torch.manual_seed(0)
    return DINOv3Discriminator(Source(config=dict(TINY)), layers=(1, 2, 3), head_width=8)


def test_output_shapes_per_level(disc: DINOv3Discriminator) -> None:
    x = torch.rand(2, 3, 64, 64)
    feats = disc.backbone(x)
    assert [f.shape for f in feats] == [(2, 32, 4, 4)] * 3
    assert disc.backbone.out_channels == [32, 32, 32] and disc.backbone.kinds == ["map"] * 3
    logits = disc(x)
    assert len(logits) == 3 and all(lg.shape == (2, 1, 1, 1) for lg in logits)


@pytest.mark.parametrize(("size", "tokens", "out"), [(256, 16, 4), (512, 32, 8)])
def test_head_shapes_for_256_and_512_inputs(disc: DINOv3Discriminator, size: int, tokens: int, out: int) -> None:
    # tokens = size / 16; head: blur(pad 2) t+1 -> conv3 s2 p0 -> blur(pad 1) -1 -> conv1 s2
    # 16 -> 17 -> 8 -> 7 -> 4;  32 -> 33 -> 16 -> 15 -> 8
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        feats = disc.backbone(x)
        logits = disc(x)
    assert all(f.shape == (1, 32, tokens, tokens) for f in feats)
    assert all(lg.shape == (1, 1, out, out) for lg in logits)


def test_layers_are_one_based_and_pass_the_final_norm(disc: DINOv3Discriminator) -> None:
    raw = disc.backbone.model
    x = torch.rand(2, 3, 64, 48)
    with torch.no_grad():
        ref = raw(pixel_values=(x - MEAN) / STD, output_hidden_states=True)
        ours = disc.backbone(x)
    assert len(ref.hidden_states) == TINY["num_hidden_layers"] + 1  # [embeddings, block 1, ..., block 4]
    prefix = 1 + TINY["num_register_tokens"]
    for layer, feat in zip((1, 2, 3), ours):
        tokens = raw.norm(ref.hidden_states[layer])[:, prefix:]  # (B, 4 * 3, C), row-major patch grid
        expected = tokens.reshape(2, 4, 3, 32).permute(0, 3, 1, 2)
        torch.testing.assert_close(feat, expected, rtol=1e-5, atol=1e-5)
    # the last block, one-based index 4, is the model's own normed last_hidden_state
    last = DINOv3Features(Source(config=dict(TINY)), layers=(4,))
    last.model.load_state_dict(raw.state_dict())
    with torch.no_grad():
        (feat4,) = last(x)
    last_tokens = ref.last_hidden_state[:, prefix:]
    torch.testing.assert_close(feat4.flatten(2).transpose(1, 2), last_tokens, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layers", [(0, 1), (5,), ()])
def test_invalid_layers(layers: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        DINOv3Features(Source(config=dict(TINY)), layers=layers)


def test_size_not_multiple_of_patch_is_a_clear_error(disc: DINOv3Discriminator) -> None:
    with pytest.raises(ValueError, match="divisible by the patch size 16"):
        disc(torch.rand(1, 3, 64, 72))


def test_backbone_stays_eval_after_train(disc: DINOv3Discriminator) -> None:
    disc.train()
    try:
        assert disc.heads.training
        assert not disc.backbone.training
        assert not any(m.training for m in disc.backbone.modules())
        x = torch.rand(1, 3, 64, 64)
        with torch.no_grad():
            a, b = disc.backbone(x), disc.backbone(x)
            # the raw model in train mode rescales RoPE coordinates at random: our wrapper must not
            raw = disc.backbone.model
            raw.train()
            jittered = raw(pixel_values=(x - MEAN) / STD).last_hidden_state
            raw.eval()
            clean = raw(pixel_values=(x - MEAN) / STD).last_hidden_state
        for fa, fb in zip(a, b):
            torch.testing.assert_close(fa, fb, rtol=0, atol=0)
        assert not torch.allclose(jittered, clean)
        disc.backbone.train()
        assert not disc.backbone.training and not disc.backbone.model.training
    finally:
        disc.eval()


def test_gradients_reach_image_but_not_backbone_weights() -> None:
    torch.manual_seed(1)
    disc = DINOv3Discriminator(Source(config=dict(TINY)), layers=(1, 2, 3), head_width=8)
    disc.train()
    assert all(not p.requires_grad for p in disc.backbone.parameters())
    backbone_before = {k: v.clone() for k, v in disc.backbone.state_dict().items()}
    heads_before = {k: v.clone() for k, v in disc.trainable_state_dict().items()}
    names = [n for n, _ in disc.trainable_named_parameters()]
    assert names and all(n.startswith("heads.") for n in names)
    optimizer = torch.optim.Adam([p for _, p in disc.trainable_named_parameters()], lr=1e-2)

    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    loss = sum(lg.mean() for lg in disc(x))
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in disc.backbone.parameters())
    assert all(p.grad is not None for _, p in disc.trainable_named_parameters())
    optimizer.step()

    for k, v in disc.backbone.state_dict().items():
        assert torch.equal(v, backbone_before[k]), k
    changed = [k for k, v in disc.trainable_state_dict().items() if not torch.equal(v, heads_before[k])]
    assert any(k.endswith("weight_orig") for k in changed)


def test_missing_weights_names_the_component(monkeypatch: pytest.MonkeyPatch) -> None:
    hub_id = "facebook/dinov3-vitb16-pretrain-lvd1689m"
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(hub_id, "config.json"), str):
        pytest.skip("real DINOv3 weights are in the local hub cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError) as info:
        DINOv3Discriminator(Source(pretrained=hub_id))
    message = str(info.value)
    assert "DINOv3-ViT-B/16 (discriminator backbone)" in message and hub_id in message
    with pytest.raises(MissingWeightsError, match="DINOv3"):
        DINOv3Features(Source(pretrained="/nonexistent/dinov3-folder"))
