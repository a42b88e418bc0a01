"""Tiling helpers: tile placement, blend weights, tiled_apply, padding, tiled VAE-style scaling."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from models.inference.tiling import border_gradient_ratio, blend_weights, pad_to_multiple, tile_starts, tiled_apply
from models.inference.vae_tiling import tiled_decode, tiled_encode


@pytest.mark.parametrize("length", [1, 7, 64, 65, 100, 127, 128, 129, 300, 1000])
@pytest.mark.parametrize("tile,overlap", [(64, 32), (64, 0), (16, 15), (128, 8)])
def test_tile_starts_cover_with_overlap(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    if length <= tile:
        assert starts == [0]
        return
    assert starts[0] == 0 and starts[-1] == length - tile  # first flush with 0, last flush with the end
    assert starts == sorted(set(starts))  # strictly increasing, no duplicates
    covered = torch.zeros(length, dtype=torch.bool)
    for s in starts:
        assert 0 <= s <= length - tile  # every tile inside the image
        covered[s : s + tile] = True
    assert bool(covered.all())
    for a, b in zip(starts, starts[1:]):
        assert b - a <= tile - overlap  # neighbours share at least `overlap` pixels
    # minimal: the count equals ceil((length - tile) / stride) + 1
    stride = tile - overlap
    assert len(starts) == -(-(length - tile) // stride) + 1


def test_tile_starts_hand_example() -> None:
    assert tile_starts(100, 64, 32) == [0, 32, 36]
    assert tile_starts(160, 64, 32) == [0, 32, 64, 96]
    with pytest.raises(ValueError):
        tile_starts(100, 64, 64)


@pytest.mark.parametrize("kind", ["gaussian", "linear"])
@pytest.mark.parametrize("h,w", [(64, 64), (33, 20), (8, 96)])
def test_blend_weights_positive_symmetric(kind: str, h: int, w: int) -> None:
    wt = blend_weights(h, w, kind, overlap=8)
    assert wt.shape == (1, 1, h, w)
    assert bool((wt > 0).all())
    assert torch.equal(wt, wt.flip(-1)) and torch.equal(wt, wt.flip(-2))
    assert wt.max().item() <= 1.0
    # peaks in the centre, decreasing (non-increasing) towards the edge
    row = wt[0, 0, h // 2, : (w + 1) // 2]
    assert bool((row[1:] >= row[:-1]).all())


def test_blend_weights_values() -> None:
    lin = blend_weights(1, 10, "linear", overlap=4)[0, 0, 0]
    torch.testing.assert_close(lin, torch.tensor([0.125, 0.375, 0.625, 0.875, 1, 1, 0.875, 0.625, 0.375, 0.125]))
    g = blend_weights(1, 64, "gaussian")[0, 0, 0].double()
    mid = 31.5
    expect = torch.exp(-0.5 * ((torch.arange(64, dtype=torch.float64) - mid) / 6.4) ** 2)
    torch.testing.assert_close(g, expect, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("weight", ["linear", "gaussian"])
def test_tiled_apply_identity(weight: str) -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 70, 45)
    y = tiled_apply(x, lambda t: t, tile=32, overlap=8, weight=weight)
    # a convex combination of equal values: equal up to float rounding (the normalisation divides)
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)
    small = torch.rand(1, 3, 20, 31)
    assert torch.equal(tiled_apply(small, lambda t: t, tile=32, overlap=8), small)  # one tile: exactly fn(x)


@pytest.mark.parametrize("weight", ["linear", "gaussian"])
def test_tiled_apply_nearest_upsample(weight: str) -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 2, 50, 37)
    up = lambda t: F.interpolate(t, scale_factor=2, mode="nearest")  # noqa: E731
    y = tiled_apply(x, up, tile=16, overlap=6, scale=2, weight=weight)
    assert y.shape == (1, 2, 100, 74)
    torch.testing.assert_close(y, up(x), atol=1e-6, rtol=0)


def test_tiled_apply_one_tile_is_fn() -> None:
    x = torch.rand(1, 3, 16, 16)
    calls: list[tuple[int, ...]] = []

    def fn(t: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(t.shape))
        return t * 3 + 1

    assert torch.equal(tiled_apply(x, fn, tile=16, overlap=4), x * 3 + 1)
    assert calls == [(1, 3, 16, 16)]


def test_tiled_apply_blends_with_normalised_weights() -> None:
    """A tile-dependent fn: each pixel gets the weighted mean of the constants of the tiles covering it."""
    x = torch.zeros(1, 1, 1, 12)
    starts = tile_starts(12, 8, 4)  # [0, 4]
    ids = iter(range(len(starts)))
    y = tiled_apply(x, lambda t: t + float(next(ids)), tile=8, overlap=4, weight="linear")
    w = blend_weights(1, 8, "linear", overlap=4)[0, 0, 0]  # tiles: [0,8) value 0, [4,12) value 1
    expect = torch.zeros(12)
    expect[8:] = 1.0
    expect[4:8] = w[4:8] * 0 / (w[4:8] + w[0:4]) + w[0:4] * 1 / (w[4:8] + w[0:4])
    torch.testing.assert_close(y[0, 0, 0], expect)


def test_fractional_scale_and_vae_helpers() -> None:
    """tiled_encode / tiled_decode with avg-pool / nearest stand-in maps (linear, local): equal untiled."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 96, 80)
    enc = lambda t: F.avg_pool2d(t, 8)  # noqa: E731  (B, 3, H, W) -> (B, 3, H/8, W/8)
    dec = lambda z: F.interpolate(z, scale_factor=8, mode="nearest")  # noqa: E731
    z = tiled_encode(enc, x, factor=8, tile=32, overlap=16)
    torch.testing.assert_close(z, enc(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(tiled_decode(dec, z, factor=8, tile=32, overlap=16), dec(z), atol=1e-6, rtol=0)
    torch.testing.assert_close(tiled_apply(x, enc, tile=32, overlap=16, scale=Fraction(1, 8)), enc(x), atol=1e-6,
                               rtol=0)
    with pytest.raises(ValueError):
        tiled_encode(enc, x[..., :90, :], factor=8, tile=32, overlap=16)  # not a multiple of the factor


def test_pad_to_multiple() -> None:
    x = torch.arange(5.0).view(1, 1, 1, 5).expand(1, 1, 3, 5)
    p = pad_to_multiple(x, 4)
    assert p.shape == (1, 1, 4, 8)
    torch.testing.assert_close(p[0, 0, 0], torch.tensor([0, 1, 2, 3, 4, 3, 2, 1.0]))  # reflect
    assert torch.equal(p[..., :3, :5], x)
    tiny = torch.rand(1, 3, 2, 3)
    q = pad_to_multiple(tiny, 8)  # pad >= size: replicate fallback
    assert q.shape == (1, 3, 8, 8) and torch.equal(q[..., :2, :3], tiny)
    already = torch.rand(1, 1, 8, 12)
    assert pad_to_multiple(already, 4) is already  # nothing to pad


def _smooth_image(n: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, n), torch.linspace(0, 1, n), indexing="ij")
    return (0.3 + 0.3 * xx + 0.2 * torch.sin(6.0 * yy) * torch.cos(4.0 * xx)).expand(1, 3, n, n).clone()


def _tone_shift_fn():
    """Each call (tile) shifts brightness by a different amount, like a per-tile GroupNorm statistic would."""
    offsets = iter([0.0, 0.12, -0.08, 0.1, -0.1, 0.05, 0.15, -0.12, 0.07] * 4)
    return lambda t: t + next(offsets)


def test_border_gradient_ratio_detects_hard_seams_only() -> None:
    x = _smooth_image(96)
    assert abs(border_gradient_ratio(x, [32, 64]) - 1) < 0.2  # no tiles: no seam
    hard = tiled_apply(x, _tone_shift_fn(), tile=32, overlap=0, weight="constant")  # 3 x 3 disjoint tiles
    r_hard = border_gradient_ratio(hard, [32, 64])
    starts = tile_starts(96, 32, 16)  # [0, 16, 32, 48, 64]
    borders = sorted(set(starts[1:] + [s + 32 for s in starts[:-1]]))
    r_lin = border_gradient_ratio(tiled_apply(x, _tone_shift_fn(), tile=32, overlap=16, weight="linear"), borders)
    r_gau = border_gradient_ratio(tiled_apply(x, _tone_shift_fn(), tile=32, overlap=16, weight="gaussian"), borders)
    print(f"border gradient ratio: hard {r_hard:.2f}, linear feather {r_lin:.2f}, gaussian {r_gau:.2f}")
    assert r_hard > 5
    assert r_lin < 1.5 and r_gau < 1.5
