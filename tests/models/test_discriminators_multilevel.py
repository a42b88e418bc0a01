"""DiffAugment shared between real and fake, MultiLevelDiscriminator plumbing, YAML (jsonargparse) factories."""

import pytest
import torch
import yaml

from models.discriminators import (
    CLIPConvNeXtDiscriminator,
    DiffAugment,
    DINOv3Discriminator,
    MultiLevelDiscriminator,
)
from models.discriminators.diffaugment import _translate
from models.pretrained import Source

DINO_TINY = dict(
    hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, num_register_tokens=4
)


def test_diffaugment_same_input_twice_gives_identical_outputs_and_changes_the_image() -> None:
    torch.manual_seed(0)
    aug = DiffAugment("color,translation,cutout")
    x = torch.rand(3, 3, 32, 32)
    real, fake = aug(x, x.clone())
    torch.testing.assert_close(real, fake, rtol=0, atol=0)
    assert not torch.allclose(real, x)
    assert aug(x)[0].shape == x.shape


def test_diffaugment_uses_one_parameter_set_for_all_inputs() -> None:
    # translation and cutout are linear on [-1, 1] images, so with shared parameters aug((a + b) / 2) = mean of augs;
    # independent draws per input would break this identity.
    torch.manual_seed(1)
    aug = DiffAugment("translation,cutout")
    a, b = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    ya, yb, ym = aug(a, b, (a + b) / 2)
    torch.testing.assert_close(ym, (ya + yb) / 2)
    # brightness/saturation/contrast factors are shared too: a constant image keeps a constant, equal output
    torch.manual_seed(2)
    c1, c2 = DiffAugment("color")(torch.full((2, 3, 8, 8), 0.3), torch.full((2, 3, 8, 8), 0.3))
    torch.testing.assert_close(c1, c2, rtol=0, atol=0)
    assert torch.allclose(c1, c1[:, :1, :1, :1].expand_as(c1))


def test_translation_matches_hand_indexing() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = _translate(x, torch.tensor([1]), torch.tensor([-1]))[0, 0]
    expected = torch.zeros(4, 4)
    for i in range(4):
        for j in range(4):
            if 0 <= i + 1 < 4 and 0 <= j - 1 < 4:
                expected[i, j] = x[0, 0, i + 1, j - 1]
    torch.testing.assert_close(out, expected)


def test_cutout_greys_at_most_a_half_side_square() -> None:
    torch.manual_seed(3)
    (out,) = DiffAugment("cutout")(torch.ones(8, 3, 16, 16))
    grey = (out == 0.5).all(dim=1)  # cut pixels: 0 on [-1, 1] = 0.5 on [0, 1]; the rest unchanged
    assert torch.all((out == 0.5) | (out == 1.0))
    counts = grey.flatten(1).sum(1)
    assert torch.all(counts > 0) and torch.all(counts <= 8 * 8)


def test_diffaugment_off_and_errors() -> None:
    x = torch.rand(2, 3, 8, 8)
    off = DiffAugment("")
    assert not off.enabled and off(x)[0] is x
    with pytest.raises(ValueError, match="unknown DiffAugment policy"):
        DiffAugment("color,rotate")
    with pytest.raises(ValueError, match="same shape"):
        DiffAugment("color")(x, torch.rand(1, 3, 8, 8))


def test_diffaugment_is_differentiable() -> None:
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    (y,) = DiffAugment()(x)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def disc() -> DINOv3Discriminator:
    torch.manual_seed(0)
    return DINOv3Discriminator(Source(config=dict(DINO_TINY)), layers=(1, 2, 3), head_width=8)


def test_forward_pair_equals_separate_passes_without_augmentation(disc: DINOv3Discriminator) -> None:
    disc.eval()
    real, fake = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        r, f = disc.forward_pair(real, fake)
        r_ref, f_ref = disc(real), disc(fake)
    for a, b in zip(r + f, r_ref + f_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_forward_pair_shares_the_augmentation() -> None:
    torch.manual_seed(4)
    disc = DINOv3Discriminator(
        Source(config=dict(DINO_TINY)), layers=(1, 2), head_width=8, diffaug="color,translation,cutout"
    )
    disc.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        r, f = disc.forward_pair(x, x.clone())
        plain = disc(x, augment=False)
    for a, b in zip(r, f):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not all(torch.allclose(a, b) for a, b in zip(r, plain))


def test_trainable_state_is_heads_only_and_round_trips(disc: DINOv3Discriminator) -> None:
    names = {n for n, _ in disc.trainable_named_parameters()}
    all_named = dict(disc.named_parameters())
    assert names == {n for n in all_named if n.startswith("heads.")}
    assert not any(n.startswith("backbone.") for n in names)
    state = disc.trainable_state_dict()
    assert state and all(k.startswith("heads.") for k in state)
    assert any(k.endswith("weight_u") for k in state)  # spectral-norm state travels with the heads
    assert any(k.startswith("backbone.") for k in disc.state_dict())
    torch.manual_seed(9)
    other = DINOv3Discriminator(Source(config=dict(DINO_TINY)), layers=(1, 2, 3), head_width=8)
    other.load_trainable_state_dict(state)
    for k, v in other.trainable_state_dict().items():
        assert torch.equal(v, state[k]), k


def test_generic_discriminator_over_any_backbone(disc: DINOv3Discriminator) -> None:
    generic = MultiLevelDiscriminator(disc.backbone, head_width=4)
    assert generic.num_levels == 3 and generic.heads[0].width == 4
    assert [tuple(lg.shape) for lg in generic(torch.rand(1, 3, 64, 64))] == [(1, 1, 1, 1)] * 3


def test_heads_in_eval_keep_spectral_norm_state(disc: DINOv3Discriminator) -> None:
    disc.train()
    disc.heads.eval()  # the generator step
    before = {k: v.clone() for k, v in disc.trainable_state_dict().items()}
    disc(torch.rand(1, 3, 64, 64))
    for k, v in disc.trainable_state_dict().items():
        assert torch.equal(v, before[k]), k
    disc.eval()


def test_factories_instantiate_from_yaml() -> None:
    from jsonargparse import ArgumentParser

    text = """
dino:
  class_path: models.discriminators.DINOv3Discriminator
  init_args:
    backbone:
      config: {hidden_size: 32, num_hidden_layers: 4, num_attention_heads: 2, intermediate_size: 64,
               num_register_tokens: 4}
    layers: [1, 2, 3]
    head_width: 8
    diffaug: color,translation,cutout
convnext:
  class_path: models.discriminators.CLIPConvNeXtDiscriminator
  init_args:
    backbone:
      config: {depths: [1, 1, 1, 1], dims: [16, 32, 64, 128], num_classes: 24}
    stages: [0, 2]
    head_width: 8
"""
    parser = ArgumentParser()
    parser.add_argument("--dino", type=MultiLevelDiscriminator)
    parser.add_argument("--convnext", type=MultiLevelDiscriminator)
    cfg = parser.parse_object(yaml.safe_load(text))
    objs = parser.instantiate_classes(cfg)
    dino, convnext = objs.dino, objs.convnext
    assert isinstance(dino, DINOv3Discriminator) and dino.backbone.layers == (1, 2, 3)
    assert dino.diffaug.enabled and dino.heads[0].width == 8
    assert isinstance(convnext, CLIPConvNeXtDiscriminator)
    assert convnext.backbone.out_channels == [16, 64, 24] and convnext.backbone.kinds == ["map", "map", "vector"]
    assert [tuple(lg.shape) for lg in convnext(torch.rand(1, 3, 64, 64))] == [(1, 1, 4, 4), (1, 1, 1, 1), (1, 1)]
