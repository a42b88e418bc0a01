"""BlurPool filter/padding and the spectral-norm discriminator heads (TUDSR paper 3.5; head layout of
nupurkmr9/vision-aided-gan ``vision_aided_loss/cv_discriminator.py``)."""

import pytest
import torch
from torch import nn

from models.discriminators.blurpool import BlurPool, binomial_filter
from models.discriminators.heads import ConvHead, VectorHead, build_heads, conv_head_output_size


def test_blurpool_filter_is_normalised_outer_product_of_1331() -> None:
    blur = BlurPool(3)
    row = torch.tensor([1.0, 3.0, 3.0, 1.0])
    expected = torch.outer(row, row) / 64.0
    assert blur.filt.shape == (3, 1, 4, 4)
    for c in range(3):
        torch.testing.assert_close(blur.filt[c, 0], expected)
    row5 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    torch.testing.assert_close(binomial_filter(5), torch.outer(row5, row5) / 256.0)
    assert "filt" not in blur.state_dict()  # constant, kept out of checkpoints


@pytest.mark.parametrize(
    ("size", "stride", "pad_off", "expected"),
    [(16, 1, 0, 15), (16, 1, 1, 17), (32, 1, 1, 33), (16, 2, 0, 8), (7, 1, 0, 6)],
)
def test_blurpool_shapes(size: int, stride: int, pad_off: int, expected: int) -> None:
    # pad = (4 - 1) // 2 + pad_off on every side; out = floor((size + 2 pad - 4) / stride) + 1
    out = BlurPool(2, stride=stride, pad_off=pad_off)(torch.rand(1, 2, size, size))
    assert out.shape == (1, 2, expected, expected)


def test_blurpool_impulse_response_and_zero_padding() -> None:
    blur = BlurPool(1)
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 4, 4] = 1.0
    out = blur(x)[0, 0]  # pad 1: out[i, j] = filt[5 - i, 5 - j] (symmetric filter)
    expected = torch.zeros(7, 7)
    expected[2:6, 2:6] = binomial_filter(4)
    torch.testing.assert_close(out, expected)
    # zero padding (not reflect): the corner of a constant image loses the filter mass over the pad row/column
    ones = blur(torch.ones(1, 1, 8, 8))[0, 0]
    torch.testing.assert_close(ones[0, 0], torch.tensor((7.0 / 8.0) ** 2))
    torch.testing.assert_close(ones[3, 3], torch.tensor(1.0))


@pytest.mark.parametrize(("tokens", "expected"), [(16, 4), (32, 8), (4, 1), (64, 16)])
def test_conv_head_output_size_by_hand(tokens: int, expected: int) -> None:
    # 16: blur(pad 2) 17 -> conv3 s2 8 -> blur(pad 1) 7 -> conv1 s2 4; 32: 33 -> 16 -> 15 -> 8
    assert conv_head_output_size(tokens) == expected
    head = ConvHead(8, width=16)
    assert head(torch.rand(2, 8, tokens, tokens)).shape == (2, 1, expected, expected)


def test_conv_head_layout_and_too_small_input() -> None:
    head = ConvHead(8, width=16)
    blur1, conv1, act, blur2, conv2 = head
    assert isinstance(blur1, BlurPool) and blur1.pad == 2 and blur1.stride == 1
    assert (conv1.kernel_size, conv1.stride, conv1.padding) == ((3, 3), (2, 2), (0, 0))
    assert isinstance(act, nn.LeakyReLU) and act.negative_slope == 0.2
    assert isinstance(blur2, BlurPool) and blur2.pad == 1 and blur2.stride == 1
    assert (conv2.kernel_size, conv2.stride, conv2.out_channels) == ((1, 1), (2, 2), 1)
    with pytest.raises(ValueError, match="h, w >= 4"):
        head(torch.rand(1, 8, 3, 3))


def _spectral_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.mark.parametrize(("cls", "channels"), [(ConvHead, 8), (VectorHead, 24)], ids=["conv", "vector"])
def test_spectral_norm_applied_and_sigma_one(cls: type[nn.Module], channels: int) -> None:
    torch.manual_seed(0)  # built here, not at collection: its random init must not depend on what was collected first
    head = cls(channels, width=16)
    layers = _spectral_layers(head)
    assert len(layers) == 2
    for layer in layers:
        assert hasattr(layer, "weight_orig") and hasattr(layer, "weight_u")
        with torch.no_grad():
            layer.weight_orig.mul_(7.0)  # far from unit norm before normalisation
    x = torch.rand(2, 8, 16, 16) if isinstance(head, ConvHead) else torch.rand(2, 24)
    head.train()
    for _ in range(60):  # one power iteration per training forward
        head(x)
    for layer in layers:
        w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        sigma = torch.linalg.matrix_norm(w, ord=2)
        assert abs(sigma.item() - 1.0) < 1e-2  # power iteration converges to sigma_max
    assert torch.linalg.matrix_norm(layers[0].weight_orig.detach().reshape(layers[0].weight.shape[0], -1), ord=2) > 2
    # eval: no power iteration (u stays), the output is deterministic
    head.eval()
    u = layers[0].weight_u.clone()
    y1, y2 = head(x), head(x)
    torch.testing.assert_close(layers[0].weight_u, u, rtol=0, atol=0)
    torch.testing.assert_close(y1, y2)


def test_vector_head_shape() -> None:
    assert VectorHead(24, width=16)(torch.rand(3, 24)).shape == (3, 1)
    with pytest.raises(ValueError):
        VectorHead(24)(torch.rand(3, 24, 1, 1))


def test_build_heads_by_kind() -> None:
    heads = build_heads([8, 12, 24], ["map", "map", "vector"], width=16)
    assert [type(h) for h in heads] == [ConvHead, ConvHead, VectorHead]
    assert heads[1].in_channels == 12 and heads[2].in_dim == 24 and heads[0].width == 16
    with pytest.raises(ValueError, match="unknown head kind"):
        build_heads([8], ["grid"], width=16)
    with pytest.raises(ValueError, match="differ in length"):
        build_heads([8, 8], ["map"], width=16)
