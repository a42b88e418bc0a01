"""Colour fix: AdaIN statistics transfer and wavelet low/high-frequency swap on synthetic images."""

from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

from models.inference.colorfix import ColorFix, adain_color_fix, wavelet_color_fix, wavelet_decompose


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(dim=(-2, -1)), x.std(dim=(-2, -1), unbiased=False)


def test_adain_matches_ref_channel_stats() -> None:
    torch.manual_seed(0)
    sr = 0.3 + 0.4 * torch.rand(2, 3, 40, 56)  # mean ~0.5, std ~0.115, no clamping after the transfer
    ref = 0.5 + 0.1 * torch.randn(2, 3, 40, 56).clamp(-2, 2) + torch.tensor([0.1, -0.1, 0.0]).view(1, 3, 1, 1)
    out = adain_color_fix(sr, ref)
    assert out.shape == sr.shape and out.min() >= 0 and out.max() <= 1
    m_out, s_out = _stats(out)
    m_ref, s_ref = _stats(ref)
    torch.testing.assert_close(m_out, m_ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(s_out, s_ref, atol=1e-4, rtol=0)
    # structure of sr is kept: per channel an increasing affine map of sr
    corr = F.cosine_similarity((out - out.mean((-2, -1), keepdim=True)).flatten(2),
                               (sr - sr.mean((-2, -1), keepdim=True)).flatten(2), dim=-1)
    assert bool((corr > 0.9999).all())


def test_wavelet_decompose_sums_back_and_low_is_smooth() -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64)
    high, low = wavelet_decompose(x, levels=5)
    torch.testing.assert_close(high + low, x, atol=1e-5, rtol=0)
    const = torch.full((1, 3, 20, 20), 0.37)
    h_c, l_c = wavelet_decompose(const)
    torch.testing.assert_close(l_c, const)  # the blur keeps constants (kernel sums to 1, replicate padding)
    assert h_c.abs().max() < 1e-6


def _grid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    yy, xx = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32), indexing="ij")
    return yy, xx


def test_wavelet_keeps_high_of_sr_and_low_of_ref() -> None:
    """sr = grey horizontal ramp + pixel checkerboard; ref = coloured vertical ramp, no texture.

    Hand-derived answer in the interior: the [1, 2, 1] / 4 blur has zero response at the checkerboard frequency
    (1 - 2 + 1 = 0), so the checkerboard lies entirely in sr's high band, while a linear ramp passes every symmetric
    blur unchanged away from the border, so it lies entirely in the low band. Hence out = ref + checkerboard, with
    sr's own low band (its grey x-ramp) gone. The border (where the dilated blurs meet replicate padding) is excluded.
    """
    n = 96
    yy, xx = _grid(n)
    checker = 0.15 * torch.where(((xx + yy) % 2) == 0, 1.0, -1.0)
    sr = (0.3 + 0.2 * xx / n + checker).expand(1, 3, n, n).clone()  # grey, strongly textured
    colours = torch.tensor([0.7, 0.45, 0.3]).view(1, 3, 1, 1)
    ref = colours + 0.1 * (yy / n - 0.5)  # (1, 3, n, n) smooth, orange-ish
    out = wavelet_color_fix(sr, ref)
    assert out.shape == sr.shape and out.min() >= 0 and out.max() <= 1

    c = slice(32, -32)  # the five levels reach 1 + 2 + 4 + 8 + 16 = 31 px
    expect = ref + checker
    torch.testing.assert_close(out[..., c, c], expect[..., c, c], atol=1e-5, rtol=0)
    # and it is not sr: sr's colours (grey) are replaced, the texture is kept
    assert (out[..., c, c] - sr[..., c, c]).abs().mean() > 0.1
    assert ((out - ref)[..., c, c].abs().mean() - 0.15).abs() < 1e-4


def test_colorfix_class() -> None:
    torch.manual_seed(0)
    sr, ref = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    assert torch.equal(ColorFix("none")(sr, ref), sr)
    assert torch.equal(ColorFix("adain")(sr, ref), adain_color_fix(sr, ref))
    assert torch.equal(ColorFix("wavelet")(sr, ref), wavelet_color_fix(sr, ref))
    with pytest.raises(ValueError):
        ColorFix("histogram")
    with pytest.raises(ValueError):
        adain_color_fix(sr, ref[..., :16])
