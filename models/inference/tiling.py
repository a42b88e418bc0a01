"""Overlapping tiles with smooth blending weights, in pixel or latent space.

One function, :func:`tiled_apply`, runs any per-tile network (UNet denoiser, VAE encoder / decoder, a DiT) on
overlapping tiles and blends the outputs with normalised weights:

    out(p) = sum_k w_k(p) * fn(x_k)(p) / sum_k w_k(p)

so every output pixel is a convex combination of the tile outputs that cover it (no seams, no brightness
change where tiles overlap). Latent tiles of 64 with overlap 32 and Gaussian weights follow Mixture of Diffusers
(albarji/mixture-of-diffusers), as the one-step SD super-resolvers tile; pixel tiles with a linear feather follow
StrSR's inference (jkwang28/StrSR ``test_flux.py``). ``weight="feather"`` is that script's exact mask: linear
ramps ``linspace(0, 1, overlap)`` on the *interior* edges of each tile only (edges on the image border keep weight 1),
and the weight sum clamped at 1e-6 before dividing. An input that fits in one tile is passed through ``fn``
unchanged (bit-identical to untiled).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["tile_starts", "blend_weights", "feather_weights", "tiled_apply", "pad_to_multiple", "border_gradient_ratio"]

# Gaussian weights: sigma = GAUSSIAN_SIGMA_FRAC * tile (the common latent-tiling code uses var = 0.01 on a
# coordinate normalised by the tile size, i.e. sigma = 0.1 * tile). At a tile edge the weight is
# exp(-0.5 * 5^2) ~ 3.7e-6 of the centre, so a tile's hard border contributes almost nothing to the blend.
GAUSSIAN_SIGMA_FRAC = 0.1


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap`` shared pixels.

    Tiles step by ``tile - overlap``; the last tile is placed flush with the end (``length - tile``), so it may
    overlap its neighbour by more than ``overlap``. ``length <= tile`` gives one tile, ``[0]``.
    """
    if length <= 0 or tile <= 0:
        raise ValueError(f"length and tile must be positive, got length={length}, tile={tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got overlap={overlap}, tile={tile}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _ramp_1d(n: int, kind: str, overlap: int) -> Tensor:
    """Symmetric positive 1-D profile of length ``n``, maximum 1."""
    i = torch.arange(n, dtype=torch.float64)
    if kind == "gaussian":
        mid = (n - 1) / 2
        sigma = GAUSSIAN_SIGMA_FRAC * n
        return torch.exp(-0.5 * ((i - mid) / sigma) ** 2)
    if kind == "linear":
        if overlap <= 0:
            return torch.ones(n, dtype=torch.float64)
        # Feather: (k + 0.5) / overlap over the first / last ``overlap`` pixels, 1 inside; never zero.
        dist = torch.minimum(i + 0.5, n - i - 0.5)  # distance of the pixel centre to the nearest tile edge
        return torch.clamp(dist / overlap, max=1.0)
    if kind == "constant":
        return torch.ones(n, dtype=torch.float64)
    raise ValueError(f"unknown blend weight kind {kind!r}; use 'gaussian', 'linear' or 'constant'")


def blend_weights(h: int, w: int, kind: str = "gaussian", overlap: int = 0) -> Tensor:
    """Separable blending weights of shape ``(1, 1, h, w)``, strictly positive, symmetric, maximum 1 (float32).

    Args:
        h, w: tile size (output space).
        kind: ``"gaussian"`` (sigma = 0.1 * tile per axis, see ``GAUSSIAN_SIGMA_FRAC``), ``"linear"`` (feather
            ramps of ``overlap`` pixels at each edge, flat inside) or ``"constant"`` (plain averaging).
        overlap: ramp length in pixels for ``"linear"`` (ignored otherwise).
    """
    wy = _ramp_1d(h, kind, min(overlap, h // 2))
    wx = _ramp_1d(w, kind, min(overlap, w // 2))
    return (wy[:, None] * wx[None, :]).float()[None, None]  # (1, 1, h, w)


def feather_weights(h: int, w: int, overlap: int, top: bool, bottom: bool, left: bool, right: bool) -> Tensor:
    """The released StrSR tile mask (jkwang28/StrSR ``test_flux.py`` / ``test_zimage.py``, ``infer_tiled``): ones,
    times ``linspace(0, 1, overlap)`` along each edge flagged as interior (``top``: the tile does not start at the
    image's first row, ...). (1, 1, h, w) float32; ramps start at weight 0."""
    mask = torch.ones(1, 1, h, w, dtype=torch.float32)
    ramp = torch.linspace(0, 1, overlap, dtype=torch.float32) if overlap > 0 else None
    if ramp is not None:
        if top:
            mask[:, :, :overlap, :] *= ramp.view(1, 1, -1, 1)
        if bottom:
            mask[:, :, -overlap:, :] *= ramp.flip(0).view(1, 1, -1, 1)
        if left:
            mask[:, :, :, :overlap] *= ramp.view(1, 1, 1, -1)
        if right:
            mask[:, :, :, -overlap:] *= ramp.flip(0).view(1, 1, 1, -1)
    return mask


def _scaled(v: int, scale: Fraction, what: str) -> int:
    s = v * scale
    if s.denominator != 1:
        raise ValueError(f"{what}={v} times scale={scale} is not an integer; choose sizes divisible accordingly")
    return int(s)


def tiled_apply(
    x: Tensor,
    fn: Callable[[Tensor], Tensor],
    tile: int,
    overlap: int,
    scale: float | Fraction = 1,
    weight: str = "linear",
) -> Tensor:
    """Apply ``fn`` to overlapping ``tile x tile`` crops of ``x`` and blend the outputs.

    Args:
        x: input (B, C, H, W).
        fn: maps a tile (B, C, th, tw) to (B, C', th * scale, tw * scale). Called under the caller's grad /
            autocast context.
        tile: tile size in input pixels (tiles are ``min(tile, H) x min(tile, W)``).
        overlap: minimum overlap between neighbouring tiles in input pixels (``< tile``).
        scale: output / input size ratio; may be fractional (``Fraction(1, 8)`` for a VAE encoder), in which
            case tile sizes, overlaps and ``H, W`` must map to integers.
        weight: blend weight kind (see :func:`blend_weights`); the linear ramp is ``overlap * scale`` long.
            ``"feather"``: the released StrSR mask (:func:`feather_weights`, interior edges only; ``scale`` 1).

    Returns:
        (B, C', H * scale, W * scale) in the dtype of ``fn``'s output; blending is accumulated in float32.
        When one tile covers ``x`` the result is exactly ``fn(x)``.
    """
    B, _, H, W = x.shape
    if H <= tile and W <= tile:
        return fn(x)
    sc = Fraction(scale).limit_denominator(1 << 16)
    th, tw = min(tile, H), min(tile, W)
    ys = tile_starts(H, tile, min(overlap, th - 1))
    xs = tile_starts(W, tile, min(overlap, tw - 1))
    oh, ow = _scaled(H, sc, "H"), _scaled(W, sc, "W")
    oth, otw = _scaled(th, sc, "tile height"), _scaled(tw, sc, "tile width")
    feather = weight == "feather"
    if feather and sc != 1:
        raise ValueError("weight='feather' (the released StrSR pixel tiling) needs scale 1")
    if not feather:
        wgt = blend_weights(oth, otw, weight, overlap=math.floor(overlap * sc)).to(x.device)  # (1, 1, oth, otw)

    acc: Tensor | None = None  # (B, C', oh, ow) float32
    norm = torch.zeros(1, 1, oh, ow, device=x.device, dtype=torch.float32)
    out_dtype = x.dtype
    for y0 in ys:
        for x0 in xs:
            out = fn(x[:, :, y0 : y0 + th, x0 : x0 + tw])  # (B, C', oth, otw)
            if out.shape[-2:] != (oth, otw) or out.shape[0] != B:
                raise ValueError(f"fn returned {tuple(out.shape)} for a ({B}, ., {th}, {tw}) tile, expected "
                                 f"({B}, C', {oth}, {otw}) with scale {sc}")
            if acc is None:
                acc = torch.zeros(B, out.shape[1], oh, ow, device=x.device, dtype=torch.float32)
                out_dtype = out.dtype
            oy, ox = _scaled(y0, sc, "tile start"), _scaled(x0, sc, "tile start")
            if feather:  # interior edges: not on the image border
                wgt = feather_weights(oth, otw, overlap, y0 > 0, y0 + tile < H, x0 > 0, x0 + tile < W).to(x.device)
            acc[:, :, oy : oy + oth, ox : ox + otw] += out.float() * wgt
            norm[:, :, oy : oy + oth, ox : ox + otw] += wgt
    assert acc is not None
    if feather:
        norm = norm.clamp_min(1e-6)  # as released: pixels whose weights are all 0 come out as 0
    return (acc / norm).to(out_dtype)


def pad_to_multiple(x: Tensor, multiple: int, mode: str = "reflect") -> Tensor:
    """Pad (B, C, H, W) on the bottom / right to the next multiples of ``multiple``; crop back with ``[..., :H, :W]``.

    ``mode="reflect"`` falls back to ``"replicate"`` along an axis whose padding is not smaller than its size
    (reflection needs ``pad < size``), so tiny images are padded too.
    """
    H, W = x.shape[-2:]
    ph, pw = (-H) % multiple, (-W) % multiple
    if ph == 0 and pw == 0:
        return x
    if mode == "reflect" and (ph >= H or pw >= W):
        x = F.pad(x, (0, 0, 0, ph), mode="reflect" if ph < H else "replicate")
        return F.pad(x, (0, pw, 0, 0), mode="reflect" if pw < W else "replicate")
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def border_gradient_ratio(img: Tensor, borders: list[int], period: int = 1) -> float:
    """Seam measure: mean |finite difference| across the given borders / the same elsewhere (both axes).

    A step between pixel ``b - 1`` and ``b`` for every ``b`` in ``borders`` (tile edges, the same positions on both
    axes) is compared with the steps at all other positions ``j`` of the same phase (``(j + 1) % period == 0``), so a
    decoder's own ``period``-pixel grid (8 for the SD VAE) does not count as a seam. About 1 means no visible seam.
    """
    gx = (img[..., :, 1:] - img[..., :, :-1]).abs()  # (B, C, H, W-1): step j -> j+1 along x
    gy = (img[..., 1:, :] - img[..., :-1, :]).abs()  # (B, C, H-1, W)
    n = min(gx.shape[-1], gy.shape[-2])
    at = torch.zeros(n, dtype=torch.bool, device=img.device)
    at[[b - 1 for b in borders if 0 < b <= n]] = True
    same_phase = torch.zeros(n, dtype=torch.bool, device=img.device)
    same_phase[period - 1 :: period] = True
    ref = same_phase & ~at
    if not at.any() or not ref.any():
        raise ValueError("need at least one border and one non-border position of the same phase")
    gx, gy = gx[..., :n], gy[..., :n, :]
    num = torch.cat([gx[..., at].flatten(), gy[..., at, :].flatten()]).float().mean()
    den = torch.cat([gx[..., ref].flatten(), gy[..., ref, :].flatten()]).float().mean()
    return (num / den).item()
