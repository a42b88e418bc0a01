"""Inference: pixel / latent tiling, tiled VAE, colour fix and the TUDSR twice-upsampling pipeline (plain torch)."""

from .colorfix import ColorFix, adain_color_fix, wavelet_color_fix, wavelet_decompose
from .tiling import blend_weights, border_gradient_ratio, pad_to_multiple, tile_starts, tiled_apply
from .tudsr import TUDSRPipeline, unet_downscale_factor
from .vae_tiling import TiledVAE, tiled_decode, tiled_encode, vae_downscale_factor

__all__ = [
    "ColorFix",
    "adain_color_fix",
    "wavelet_color_fix",
    "wavelet_decompose",
    "blend_weights",
    "border_gradient_ratio",
    "pad_to_multiple",
    "tile_starts",
    "tiled_apply",
    "TUDSRPipeline",
    "unet_downscale_factor",
    "TiledVAE",
    "tiled_decode",
    "tiled_encode",
    "vae_downscale_factor",
]
