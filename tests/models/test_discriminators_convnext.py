"""CLIP-ConvNeXt discriminator backbone on tiny random-init timm ConvNeXt models (StrSR paper 3.3)."""

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from models.discriminators import CLIPConvNeXtDiscriminator, CLIPConvNeXtFeatures
from models.pretrained import MissingWeightsError, Source

# ls_init_value=1: random blocks are not ~identity (the default layer scale 1e-6 makes stage 0 ~ the stem)
TINY = dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), num_classes=24, ls_init_value=1.0)
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def feats() -> CLIPConvNeXtFeatures:
    torch.manual_seed(0)
    return CLIPConvNeXtFeatures(Source(config=dict(TINY)))


def test_same_class_and_head_layout_as_the_real_model(feats: CLIPConvNeXtFeatures) -> None:
    model = feats.model
    assert isinstance(model, timm.models.convnext.ConvNeXt)
    assert type(model.head).__name__ == "NormMlpClassifierHead"  # pool -> LayerNorm -> Linear, as the CLIP tower
    assert model.head.fc.out_features == 24


def test_stage_shapes_and_vector_level(feats: CLIPConvNeXtFeatures) -> None:
    out = feats(torch.rand(2, 3, 64, 96))
    # stage 0 is the first stage after the stem (stride 4), then strides 8 and 16
    assert [tuple(o.shape) for o in out] == [(2, 16, 16, 24), (2, 32, 8, 12), (2, 64, 4, 6), (2, 24)]
    assert feats.out_channels == [16, 32, 64, 24]
    assert feats.kinds == ["map", "map", "map", "vector"]


def test_levels_equal_stage_outputs_and_head_of_the_timm_model(feats: CLIPConvNeXtFeatures) -> None:
    model = feats.model
    x = torch.rand(2, 3, 64, 64)
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_hook(lambda _m, _i, o, name=name: captured.__setitem__(name, o))
        for name, module in [("stem", model.stem), *[(f"stage{i}", model.stages[i]) for i in range(4)]]
    ]
    with torch.no_grad():
        embedding = model((x - CLIP_MEAN) / CLIP_STD)  # the full timm forward: (B, num_classes)
        ours = feats(x)
    for h in hooks:
        h.remove()
    for i in range(3):
        torch.testing.assert_close(ours[i], captured[f"stage{i}"])
    torch.testing.assert_close(ours[3], embedding)
    assert not torch.allclose(ours[0], captured["stem"])  # the stem (same shape) is never counted as a stage


def test_stage_selection_and_errors() -> None:
    only = CLIPConvNeXtFeatures(Source(config=dict(TINY)), stages=(1, 3), pooled=False)
    out = only(torch.rand(1, 3, 64, 64))
    assert [tuple(o.shape) for o in out] == [(1, 32, 8, 8), (1, 128, 2, 2)]
    assert only.kinds == ["map", "map"]
    with pytest.raises(ValueError, match="0..3"):
        CLIPConvNeXtFeatures(Source(config=dict(TINY)), stages=(4,))
    with pytest.raises(ValueError):
        CLIPConvNeXtFeatures(Source(config=dict(TINY)), stages=(), pooled=False)


def test_discriminator_levels_frozen_and_eval() -> None:
    torch.manual_seed(0)
    disc = CLIPConvNeXtDiscriminator(Source(config=dict(TINY)), head_width=8)
    disc.train()
    assert not any(m.training for m in disc.backbone.modules()) and disc.heads.training
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    logits = disc(x)
    assert [tuple(lg.shape) for lg in logits] == [(2, 1, 4, 4), (2, 1, 2, 2), (2, 1, 1, 1), (2, 1)]
    sum(lg.mean() for lg in logits).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in disc.backbone.parameters())
    assert all(p.grad is not None for _, p in disc.trainable_named_parameters())


def test_loads_a_local_timm_file_and_an_open_clip_file(tmp_path: Path) -> None:
    # a small registered architecture stands in for the 850M-parameter XXLarge *weights file*; same loader path
    torch.manual_seed(0)
    reference = timm.create_model("convnext_atto", pretrained=False)  # its pretrained cfg: 1000 classes
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    (tmp_path / "timm").mkdir()
    save_file(state, str(tmp_path / "timm" / "model.safetensors"))
    loaded = CLIPConvNeXtFeatures(Source(pretrained=str(tmp_path / "timm")), model_name="convnext_atto")
    for k, v in loaded.model.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)

    # open_clip layout: visual.trunk.* + a bias-free visual.head.proj (timm's filter maps it to head.fc)
    open_clip = {f"visual.trunk.{k}": v for k, v in state.items() if not k.startswith("head.fc")}
    open_clip["visual.head.proj.weight"] = state["head.fc.weight"]
    open_clip["text.token_embedding.weight"] = torch.zeros(2, 2)  # the text tower is ignored
    torch.save(open_clip, tmp_path / "open_clip_pytorch_model.bin")
    loaded = CLIPConvNeXtFeatures(
        Source(pretrained=str(tmp_path / "open_clip_pytorch_model.bin")), model_name="convnext_atto"
    )
    conv_dw = loaded.model.stages[2].blocks[0].conv_dw.weight
    torch.testing.assert_close(conv_dw, state["stages.2.blocks.0.conv_dw.weight"])
    torch.testing.assert_close(loaded.model.head.fc.weight, state["head.fc.weight"])
    assert loaded.out_channels == [40, 80, 160, 1000]


def test_missing_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="CLIP-ConvNeXt-XXLarge"):
        CLIPConvNeXtFeatures(Source(pretrained="/nonexistent/convnext_xxlarge.safetensors"))
    with pytest.raises(MissingWeightsError, match="no weight file"):
        CLIPConvNeXtFeatures(Source(pretrained=str(tmp_path)))
    hub_id = "timm/convnext_xxlarge.clip_laion2b_soup"
    from huggingface_hub import try_to_load_from_cache

    cached = [try_to_load_from_cache(hub_id, f) for f in ("model.safetensors", "open_clip_pytorch_model.bin")]
    if any(isinstance(c, str) for c in cached):
        pytest.skip("real CLIP-ConvNeXt weights are in the local hub cache")
    with pytest.raises(MissingWeightsError) as info:
        CLIPConvNeXtDiscriminator(Source(pretrained=hub_id))
    assert "CLIP-ConvNeXt-XXLarge (discriminator backbone)" in str(info.value) and hub_id in str(info.value)
