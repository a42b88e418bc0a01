"""FLUX.2 [klein] backbone for the one-step DiT generator (StrSR, paper sec. 3.1-3.2).

Latent pipeline (facts read from diffusers' ``pipeline_flux2_klein.py``; the code below is our own):

    x01 (B,3,H,W) -> vae.encode(2x-1)            (B, 32, H/8, W/8)
                  -> 2x2 patchify                (B, 128, H/16, W/16)
                  -> (z - bn.mean) / sqrt(bn.var + eps)          = model-space latent z
    z -> pack (B, L, 128), img_ids (B, L, 4) = (0, row, col, 0), txt_ids (B, L_txt, 4) = (0, 0, 0, k)
      -> Flux2Transformer2DModel(timestep=sigma)  (the model multiplies by 1000 internally) -> v (B, L, 128)
      -> unpack -> (B, 128, H/16, W/16)
    decode: de-normalise -> unpatchify -> vae.decode -> x01.

Convention: rectified flow z_t = (1 - sigma) z_0 + sigma * noise, v = noise - z_0, so z_0 = z_t - sigma * v
(one Euler step of ``FlowMatchEulerDiscreteScheduler`` from sigma to 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.generators.dit_onestep import DiTBackend
from models.pretrained import Source

__all__ = [
    "Flux2Backend",
    "FLUX2_LORA_TARGETS",
    "patchify_latents",
    "unpatchify_latents",
    "pack_latents",
    "unpack_latents",
    "latent_position_ids",
    "text_position_ids",
]

# The LoRA targets of the released StrSR code (jkwang28/StrSR, matched by suffix as its
# ``HYPIR/trainer/flux_vlm.py`` does), resolved to Linear layers only ("to_out" matches the single
# blocks' Linear, "to_out.0" the double blocks' ModuleList entry).
FLUX2_LORA_TARGETS: tuple[str, ...] = (
    "to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out", "to_out",
    "to_qkv_mlp_proj",
)


def patchify_latents(z: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2); channel index = c*4 + dy*2 + dx (diffusers' Flux2 layout)."""
    b, c, h, w = z.shape
    z = z.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)  # (B, C, 2, 2, H/2, W/2)
    return z.reshape(b, c * 4, h // 2, w // 2)


def unpatchify_latents(z: Tensor) -> Tensor:
    """Inverse of :func:`patchify_latents`: (B, 4C, h, w) -> (B, C, 2h, 2w)."""
    b, c4, h, w = z.shape
    z = z.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)  # (B, C, h, 2, w, 2)
    return z.reshape(b, c4 // 4, h * 2, w * 2)


def pack_latents(z: Tensor) -> Tensor:
    """(B, C, h, w) -> tokens (B, h*w, C), row-major."""
    b, c, h, w = z.shape
    return z.reshape(b, c, h * w).transpose(1, 2)


def unpack_latents(tokens: Tensor, h: int, w: int) -> Tensor:
    """Inverse of :func:`pack_latents`: (B, h*w, C) -> (B, C, h, w)."""
    b, n, c = tokens.shape
    if n != h * w:
        raise ValueError(f"{n} tokens cannot be unpacked to a {h}x{w} grid")
    return tokens.transpose(1, 2).reshape(b, c, h, w)


def latent_position_ids(b: int, h: int, w: int, device: torch.device | None = None) -> Tensor:
    """4-axis RoPE ids (T, H, W, L) of the image tokens: (B, h*w, 4) int64 with (0, row, col, 0)."""
    rows = torch.arange(h, device=device).repeat_interleave(w)  # (h*w,)
    cols = torch.arange(w, device=device).repeat(h)  # (h*w,)
    ids = torch.zeros(h * w, 4, dtype=torch.long, device=device)
    ids[:, 1], ids[:, 2] = rows, cols
    return ids.unsqueeze(0).expand(b, -1, -1)


def text_position_ids(b: int, length: int, device: torch.device | None = None) -> Tensor:
    """4-axis RoPE ids of the condition tokens: (B, L, 4) int64 with (0, 0, 0, k)."""
    ids = torch.zeros(length, 4, dtype=torch.long, device=device)
    ids[:, 3] = torch.arange(length, device=device)
    return ids.unsqueeze(0).expand(b, -1, -1)


class Flux2Backend(DiTBackend):
    """FLUX.2 [klein] transformer + ``AutoencoderKLFlux2`` behind the :class:`DiTBackend` interface.

    The model-space latent is the patchified, BatchNorm-normalised VAE latent (B, 128, H/16, W/16); the velocity
    is returned in the same layout, in fp32.

    Args:
        transformer: ``Flux2Transformer2DModel`` source (``black-forest-labs/FLUX.2-klein-base-4B``, subfolder
            ``transformer``; klein-4B: 5 double + 20 single blocks, 24 heads x 128, joint_attention_dim 7680).
        vae: ``AutoencoderKLFlux2`` source (same repository, subfolder ``vae``).
        dtype: weight dtype of the frozen transformer and VAE (``"bf16"`` or ``"fp32"``); LoRA stays fp32.
        gradient_checkpointing: recompute the transformer blocks in backward (diffusers, non-reentrant).
    """

    lora_targets = FLUX2_LORA_TARGETS

    def __init__(
        self,
        transformer: Source,
        vae: Source,
        dtype: str = "bf16",
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel

        self.load_parts("FLUX.2", Flux2Transformer2DModel, AutoencoderKLFlux2, transformer, vae, dtype,
                        gradient_checkpointing)

    @property
    def text_dim(self) -> int:
        return int(self.transformer.config.joint_attention_dim)

    # --- latent normalisation with the VAE's BatchNorm running statistics ---------------------------------------
    def _bn_stats(self, device: torch.device) -> tuple[Tensor, Tensor]:
        mean = self.vae.bn.running_mean.float().view(1, -1, 1, 1).to(device)  # (1, 128, 1, 1)
        std = torch.sqrt(self.vae.bn.running_var.float() + float(self.vae.config.batch_norm_eps)).view(1, -1, 1, 1)
        return mean, std.to(device)

    def normalize(self, z_patch: Tensor) -> Tensor:
        mean, std = self._bn_stats(z_patch.device)
        return (z_patch.float() - mean) / std

    def denormalize(self, z: Tensor) -> Tensor:
        mean, std = self._bn_stats(z.device)
        return z.float() * std + mean

    # --- DiTBackend -----------------------------------------------------------------------------------------------
    def encode(self, x01: Tensor, sample: bool = False) -> Tensor:
        dist = self.vae.encode((x01 * 2 - 1).to(self.vae.dtype)).latent_dist
        lat = dist.sample() if sample else dist.mode()  # (B, 32, H/8, W/8)
        return self.normalize(patchify_latents(lat.float()))  # (B, 128, H/16, W/16) fp32

    def velocity(self, z: Tensor, cond: Tensor, sigma: float) -> Tensor:
        b, _, h, w = z.shape
        dtype = self.transformer.dtype
        tokens = pack_latents(z).to(dtype)  # (B, L, 128)
        out = self.transformer(
            hidden_states=tokens,
            encoder_hidden_states=cond.to(dtype),  # (B, L_txt, D_text)
            timestep=torch.full((b,), float(sigma), device=z.device, dtype=dtype),  # x1000 inside the model
            img_ids=latent_position_ids(b, h, w, z.device),
            txt_ids=text_position_ids(b, cond.shape[1], z.device),
            guidance=None,
            return_dict=False,
        )[0]  # (B, L, 128)
        return unpack_latents(out.float(), h, w)  # (B, 128, h, w)

    def decode(self, z: Tensor) -> Tensor:
        lat = unpatchify_latents(self.denormalize(z))  # (B, 32, H/8, W/8)
        x = self.vae.decode(lat.to(self.vae.dtype), return_dict=False)[0]  # (B, 3, H, W) in ~[-1, 1]
        return (x.float() + 1) / 2  # not clamped: the generator decides
