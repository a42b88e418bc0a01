"""Tiled VAE encode / decode, so that a 2048 x 2048 output fits in one GPU's memory.

The SD VAE's activations at full resolution dominate inference memory (the decoder's last blocks run 128 channels
at the output resolution, plus a mid-block self-attention at 1/8 resolution). Running it on overlapping pixel tiles
bounds the peak to one tile's:

- encode: pixel tiles ``tile x tile`` (stride ``tile - overlap``) -> latent tiles ``tile/f`` blended with a linear
  feather of ``overlap/f`` latent pixels;
- decode: latent tiles ``tile/f`` (overlap ``overlap/f``) -> pixel tiles blended with a linear feather of
  ``overlap`` pixels.

Each tile normalises with its own GroupNorm statistics, so tiles can differ slightly in tone; the feather spreads
the difference over the overlap (no hard seam). When the image fits in one tile the result equals the untiled call
exactly. ``f`` is the VAE downscale factor ``2 ** (len(vae.config.block_out_channels) - 1)``.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

from torch import Tensor, nn

from .tiling import tiled_apply

__all__ = ["vae_downscale_factor", "tiled_encode", "tiled_decode", "TiledVAE"]


def vae_downscale_factor(vae: nn.Module) -> int:
    """Pixel / latent size ratio of a diffusers ``AutoencoderKL`` (8 for SD)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _check_tile(tile: int, overlap: int, factor: int) -> tuple[int, int]:
    if tile % factor:
        raise ValueError(f"VAE tile {tile} must be a multiple of the VAE factor {factor}")
    overlap = (overlap // factor) * factor  # whole latent pixels
    if not 0 <= overlap < tile:
        raise ValueError(f"VAE overlap must be in [0, tile), got {overlap} for tile {tile}")
    return tile, overlap


def tiled_encode(
    encode: Callable[[Tensor], Tensor], x: Tensor, factor: int, tile: int | None = 512, overlap: int = 64
) -> Tensor:
    """Encode (B, 3, H, W) -> (B, c, H/f, W/f) in pixel tiles of ``tile`` (``None``: one call, no tiling).

    ``H`` and ``W`` must be multiples of ``factor``; ``tile`` too (``overlap`` is rounded down to one).
    """
    if x.shape[-2] % factor or x.shape[-1] % factor:
        raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of the VAE factor {factor}")
    if tile is None:
        return encode(x)
    tile, overlap = _check_tile(tile, overlap, factor)
    return tiled_apply(x, encode, tile=tile, overlap=overlap, scale=Fraction(1, factor), weight="linear")


def tiled_decode(
    decode: Callable[[Tensor], Tensor], z: Tensor, factor: int, tile: int | None = 512, overlap: int = 64
) -> Tensor:
    """Decode (B, c, h, w) -> (B, 3, h*f, w*f) in latent tiles of ``tile / f`` (``tile`` given in pixels)."""
    if tile is None:
        return decode(z)
    tile, overlap = _check_tile(tile, overlap, factor)
    return tiled_apply(z, decode, tile=tile // factor, overlap=overlap // factor, scale=factor, weight="linear")


class TiledVAE:
    """Tiled ``encode`` / ``decode`` around a generator exposing ``encode(x01)``, ``decode(z)`` and ``vae``.

    Args:
        generator: e.g. ``OneStepSDGenerator`` (scaled latents in, [0, 1] pixels out).
        tile: pixel tile size (multiple of the VAE factor) or ``None`` for untiled calls.
        overlap: pixel overlap between tiles.
    """

    def __init__(self, generator: nn.Module, tile: int | None = 512, overlap: int = 64) -> None:
        self.generator = generator
        self.factor = vae_downscale_factor(generator.vae)
        self.tile = tile
        self.overlap = overlap

    def encode(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) [0, 1] -> (B, c, H/f, W/f) scaled latent."""
        return tiled_encode(self.generator.encode, x, self.factor, self.tile, self.overlap)

    def decode(self, z: Tensor) -> Tensor:
        """(B, c, h, w) scaled latent -> (B, 3, h*f, w*f) [0, 1]."""
        return tiled_decode(self.generator.decode, z, self.factor, self.tile, self.overlap)
