"""Z-Image(-Turbo) backbone for the one-step DiT generator (StrSR, paper sec. 3.1-3.2).

Facts read from diffusers' ``pipeline_z_image_img2img.py`` (the code below is our own):

- VAE: ``AutoencoderKL`` with 16 latent channels; the pipeline's model space is z = (latent - shift_factor) *
  scaling_factor (Z-Image-Turbo: scaling 0.3611, shift 0.1159, read from ``vae.config``), decoded with
  z / scaling + shift.
- The released StrSR code (jkwang28/StrSR, ``HYPIR/trainer/zimage_vlm.py`` and ``test_zimage.py``) feeds the *raw*
  VAE latent (``latent_dist.sample()``, no shift or scale) to the transformer and still decodes with
  z / scaling + shift; the released StrSR-Z weights were trained so. ``latent_convention="released"`` (default)
  reproduces that, ``"normalized"`` is the pipeline's convention above.
- ``ZImageTransformer2DModel`` takes a *list* of (C, 1, H, W) latents (one per sample), a timestep tensor (B,) and a
  *list* of caption features (L_i, cap_feat_dim); it patchifies 2x2 internally and returns a list of (C, 1, H, W).
- Reversed time convention: the model is fed t_model = 1 - sigma (the pipeline's ``(1000 - t) / 1000``; 0.2 at
  sigma 0.8) and predicts -v, so the common-convention velocity is the *negated* output and the same update
  z_0 = z_t - sigma * v applies (one ``FlowMatchEulerDiscreteScheduler`` step from sigma to 0).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from models.generators.dit_onestep import DiTBackend
from models.pretrained import Source

__all__ = ["ZImageBackend", "ZIMAGE_LORA_TARGETS"]

# The LoRA targets of the released StrSR code (jkwang28/StrSR), resolved to Linear layers by suffix.
ZIMAGE_LORA_TARGETS: tuple[str, ...] = (
    "to_q", "to_k", "to_v", "to_out.0", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3",
)


class ZImageBackend(DiTBackend):
    """Z-Image transformer + its 16-channel ``AutoencoderKL`` behind the :class:`DiTBackend` interface.

    Model-space latent: (B, 16, H/8, W/8), raw (released) or scaled and shifted (normalized); velocity returned in
    the common (FLUX) convention. Decoding always maps z / scaling + shift through the VAE.

    Args:
        transformer: ``ZImageTransformer2DModel`` source (``Tongyi-MAI/Z-Image-Turbo``, subfolder ``transformer``).
        vae: ``AutoencoderKL`` source (same repository, subfolder ``vae``).
        dtype: weight dtype of the frozen transformer and VAE; LoRA stays fp32.
        gradient_checkpointing: recompute the transformer blocks in backward.
        pad_token_std: when the transformer is built from a random ``config``, its ``x_pad_token`` and
            ``cap_pad_token`` (used to pad token sequences to multiples of 32) are drawn from N(0, std^2) so that
            tiny models never run on uninitialised memory; pretrained weights are left untouched.
        latent_convention: ``"released"`` (the raw VAE latent enters the transformer, as the released StrSR code
            and its weights) or ``"normalized"`` ((latent - shift) * scaling, the diffusers pipeline's space).
    """

    lora_targets = ZIMAGE_LORA_TARGETS

    def __init__(
        self,
        transformer: Source,
        vae: Source,
        dtype: str = "bf16",
        gradient_checkpointing: bool = False,
        pad_token_std: float = 0.02,
        latent_convention: Literal["released", "normalized"] = "released",
    ) -> None:
        super().__init__()
        if latent_convention not in ("released", "normalized"):
            raise ValueError(f"latent_convention must be 'released' or 'normalized', got {latent_convention!r}")
        self.latent_convention = latent_convention
        from diffusers import AutoencoderKL, ZImageTransformer2DModel

        self.load_parts("Z-Image", ZImageTransformer2DModel, AutoencoderKL, transformer, vae, dtype,
                        gradient_checkpointing)
        if transformer.config is not None:  # random init: the pad tokens start at zero
            with torch.no_grad():
                for token in (self.transformer.x_pad_token, self.transformer.cap_pad_token):
                    token.normal_(0.0, pad_token_std)
        self.scaling_factor = float(self.vae.config.scaling_factor)
        shift = self.vae.config.shift_factor
        self.shift_factor = float(shift) if shift is not None else 0.0

    @property
    def text_dim(self) -> int:
        return int(self.transformer.config.cap_feat_dim)

    def encode(self, x01: Tensor, sample: bool = False) -> Tensor:
        dist = self.vae.encode((x01 * 2 - 1).to(self.vae.dtype)).latent_dist
        lat = dist.sample() if sample else dist.mode()  # (B, 16, H/8, W/8)
        if self.latent_convention == "released":
            return lat.float()
        return (lat.float() - self.shift_factor) * self.scaling_factor

    def velocity(self, z: Tensor, cond: Tensor, sigma: float) -> Tensor:
        dtype = self.transformer.dtype
        b = z.shape[0]
        latents = list(z.to(dtype).unsqueeze(2).unbind(0))  # B x (C, 1, h, w)
        captions = list(cond.to(dtype).unbind(0))  # B x (L_txt, D_text)
        t_model = torch.full((b,), 1.0 - float(sigma), device=z.device, dtype=torch.float32)  # reversed time
        out = self.transformer(latents, t_model, captions, return_dict=False)[0]  # B x (C, 1, h, w)
        return -torch.stack([o.float() for o in out], dim=0).squeeze(2)  # (B, C, h, w), common convention

    def decode(self, z: Tensor) -> Tensor:
        lat = z.float() / self.scaling_factor + self.shift_factor  # both conventions (the released code too)
        x = self.vae.decode(lat.to(self.vae.dtype), return_dict=False)[0]  # (B, 3, H, W) in ~[-1, 1]
        return (x.float() + 1) / 2  # not clamped: the generator decides
