"""TUDSR one-step generator: SD2.1-base VAE + UNet with named LoRA adapters (plain torch).

Reference: TUDSR eq. (2) and Fig. 2.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from models import lora as lora_lib
from models.generators.prompt import compute_prompt_embedding
from models.lora import LoraConfig
from models.pretrained import Source, freeze, from_hf, load_or_build, resolve_dtype

__all__ = ["OneStepSDGenerator", "SD_UNET_LORA_TARGETS", "load_scheduler"]

#: default LoRA targets in the SD UNet (related code: convolutions + attention + transformer projections)
SD_UNET_LORA_TARGETS = [
    "to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2", "conv_shortcut", "conv", "conv_in", "conv_out",
    "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
]


def _as_source(value: Source | dict[str, Any] | None) -> Source | None:
    return Source(**value) if isinstance(value, dict) else value


def load_scheduler(source: Source):  # -> diffusers.DDPMScheduler
    """DDPMScheduler from a repo (``subfolder: scheduler``) or from a config dict (SD2.1-base: scaled_linear,
    beta 0.00085..0.012, 1000 steps, epsilon prediction, clip_sample false)."""
    from diffusers import DDPMScheduler

    def load(path: str, src: Source, local_only: bool):
        kwargs: dict[str, Any] = {"local_files_only": local_only}
        if src.subfolder:
            kwargs["subfolder"] = src.subfolder
        if src.revision:
            kwargs["revision"] = src.revision
        return DDPMScheduler.from_pretrained(path, **kwargs)

    return load_or_build("SD2.1-base scheduler", source, load, DDPMScheduler.from_config, "scheduler.pretrained")


class OneStepSDGenerator(nn.Module):
    """One-step SR with a frozen SD VAE/UNet and trainable LoRA adapters (TUDSR eq. 2).

    ``z_L = E(2 x_L - 1) * s`` (posterior sample while training with ``latent_mode="sample"``, its mode otherwise),
    ``eps = UNet(z_L, t, c)`` with the fixed prompt embedding ``c``,
    ``z_H = (z_L - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` (= ``DDPMScheduler.step(eps, t, z_L).pred_original_sample``
    without clipping; ``v_prediction`` schedulers use ``sqrt(abar_t) z_L - sqrt(1 - abar_t) v``),
    ``y = clamp(D(z_H / s), -1, 1)``, returned as ``(y + 1) / 2``. ``s`` = ``vae.config.scaling_factor``
    (0.18215 for SD2.1; an optional ``shift_factor`` is subtracted before scaling).

    Several adapters live in the one UNet (TUDSR stage 1 and stage 2): ``adapter_name`` is the adapter being
    *trained* (the only one :meth:`trainable_named_parameters` yields and the only one requiring grad), the
    *active* one (used by forward) is switched with :meth:`set_adapter`. Newly added or loaded adapters become
    active. The VAE and UNet base are frozen; the VAE stays in eval after ``.train()``. Inputs must have H, W
    divisible by :attr:`vae_scale_factor` (8 for SD; 2 for a VAE with two blocks); :attr:`pixel_multiple` also
    covers the UNet's downsampling (pad to it for tiled inference).

    Args:
        vae, unet, scheduler: sources of ``AutoencoderKL``, ``UNet2DConditionModel`` and ``DDPMScheduler``
            (hub id or local path with ``subfolder``, or an architecture ``config``).
        text_encoder: source of the CLIP text encoder that embeds ``prompt`` once (then dropped); without a text
            encoder or ``prompt_cache`` the condition is zeros of shape (1, 77, cross_attention_dim).
        tokenizer: source of its tokenizer (``null`` works for the empty prompt on a config-built encoder only).
        prompt: the fixed text prompt of every image (TUDSR: the empty prompt).
        prompt_cache: file that stores the prompt embedding once computed, so later runs skip the text encoder
            (see :func:`compute_prompt_embedding`).
        timestep: t of the one-step prediction (TUDSR: 200 stage 1, 50 stage 2).
        lora: settings of a trainable adapter named ``adapter_name`` added at construction (``None``: no adapter;
            add or load them later). ``target_modules=None`` means :data:`SD_UNET_LORA_TARGETS`.
        adapter_name: name of that trainable adapter in the UNet (``stage1``, ``stage2``); the export file is
            named after it.
        latent_mode: ``"sample"`` or ``"mode"`` of the VAE posterior during training (eval always uses the mode).
        dtype: base weights dtype (``"fp32"`` / ``"bf16"`` / ``"fp16"``); LoRA weights are always fp32.
        gradient_checkpointing: enable it in the UNet and the VAE.
    """

    def __init__(
        self,
        vae: Source,
        unet: Source,
        scheduler: Source,
        text_encoder: Source | None = None,
        tokenizer: Source | None = None,
        prompt: str = "",
        timestep: int = 200,
        lora: LoraConfig | None = None,
        adapter_name: str = "stage1",
        latent_mode: str = "sample",
        dtype: str = "fp32",
        gradient_checkpointing: bool = False,
        prompt_cache: str | None = None,
    ) -> None:
        super().__init__()
        from diffusers import AutoencoderKL, UNet2DConditionModel

        if latent_mode not in ("sample", "mode"):
            raise ValueError(f"latent_mode must be 'sample' or 'mode', got {latent_mode!r}")
        self.base_dtype = resolve_dtype(dtype)
        self.unet = freeze(from_hf("SD2.1-base UNet", UNet2DConditionModel, _as_source(unet), dtype=self.base_dtype,
                                   yaml_key="unet.pretrained"))
        self.vae = freeze(from_hf("SD2.1-base VAE", AutoencoderKL, _as_source(vae), dtype=self.base_dtype,
                                  yaml_key="vae.pretrained"))
        sched = load_scheduler(_as_source(scheduler))
        self.prediction_type = sched.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"unsupported scheduler prediction_type {self.prediction_type!r}")
        self.num_train_timesteps = int(sched.config.num_train_timesteps)
        self.register_buffer("alphas_cumprod", sched.alphas_cumprod.detach().double().clone(), persistent=False)

        width = int(self.unet.config.cross_attention_dim)
        embeds = compute_prompt_embedding(_as_source(text_encoder), _as_source(tokenizer), prompt, prompt_cache,
                                          shape=(1, 77, width))  # (1, L, D)
        if embeds.ndim != 3 or embeds.shape[0] != 1 or embeds.shape[-1] != width:
            raise ValueError(f"prompt embedding of shape {tuple(embeds.shape)} does not fit the UNet "
                             f"(expected (1, L, {width}))")
        self.register_buffer("prompt_embeds", embeds, persistent=False)

        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.shift_factor = float(getattr(self.vae.config, "shift_factor", None) or 0.0)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.pixel_multiple = self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)
        self.timestep = int(timestep)
        self._check_timestep(self.timestep)
        self.latent_mode = latent_mode
        self.adapter_name: str | None = None  # adapter being trained
        self._active_adapter: str | None = None  # adapter used by forward
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
            self.vae.enable_gradient_checkpointing()
        if lora is not None:
            self.add_adapter(adapter_name, lora, trainable=True)

    # ----------------------------------------------------------------------------------------------- adapters
    @property
    def active_adapter(self) -> str | None:
        return self._active_adapter

    @property
    def adapters(self) -> list[str]:
        return lora_lib.adapter_names(self.unet)

    def set_adapter(self, name: str | None) -> None:
        """Make ``name`` the only active adapter (``None``: run the bare UNet). Requires-grad stays on the
        trained adapter only (peft's own ``set_adapter`` would flip it)."""
        if name is None:
            if self.adapters:
                self.unet.disable_adapters()
        else:
            if name not in self.adapters:
                raise ValueError(f"adapter '{name}' not found; loaded adapters: {self.adapters}")
            self.unet.enable_adapters()
            self.unet.set_adapter(name)
        lora_lib.set_trainable(self.unet, self.adapter_name)
        self._active_adapter = name

    def add_adapter(self, name: str, lora_cfg: LoraConfig, trainable: bool = True) -> None:
        """Inject a new fp32 LoRA adapter; it becomes active (and the trained one if ``trainable``)."""
        lora_lib.add_adapter(self.unet, lora_cfg, name, default_targets=SD_UNET_LORA_TARGETS)
        if trainable:
            self.adapter_name = name
        self.set_adapter(name)

    def load_adapter(self, path: str | os.PathLike, name: str | None = None, trainable: bool = False) -> None:
        """Load an exported adapter file (or a directory holding ``pytorch_lora_weights.safetensors``) as ``name``
        (default: :attr:`adapter_name`); it becomes active, and frozen unless ``trainable``."""
        name = name or self.adapter_name
        if name is None:
            raise ValueError("load_adapter needs a name: this generator has no trained adapter to default to")
        lora_lib.load_adapter(self.unet, path, name, trainable=trainable)
        if trainable:
            self.adapter_name = name
        self.set_adapter(name)

    def export_adapter(self, path: str | os.PathLike, name: str | None = None, prefix: str | None = None) -> Path:
        """Write adapter ``name`` (default: the trained one) as a diffusers/peft LoRA safetensors file, loadable
        with ``UNet2DConditionModel.load_lora_adapter(file, prefix=None, adapter_name=..., use_safetensors=True)``."""
        name = name or self.adapter_name
        if name is None:
            raise ValueError("no adapter to export: give a name or add a trainable adapter")
        return lora_lib.save_adapter(self.unet, name, path, prefix=prefix)

    def trainable_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """LoRA parameters of the trained adapter, named as in ``self.named_parameters()``."""
        if self.adapter_name is None:
            return
        for name, param in lora_lib.adapter_named_parameters(self.unet, self.adapter_name):
            yield f"unet.{name}", param

    def train(self, mode: bool = True) -> OneStepSDGenerator:
        super().train(mode)
        self.vae.eval()  # frozen; the UNet follows `mode` (it holds the LoRA, whose dropout depends on it)
        return self

    # ----------------------------------------------------------------------------------------------- steps
    def _check_timestep(self, t: int) -> None:
        if not 0 <= t < self.num_train_timesteps:
            raise ValueError(f"timestep {t} outside [0, {self.num_train_timesteps})")

    def encode(self, x01: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> scaled latent (B, C, H/f, W/f) float32."""
        if x01.shape[-2] % self.vae_scale_factor or x01.shape[-1] % self.vae_scale_factor:
            raise ValueError(f"image size {tuple(x01.shape[-2:])} is not divisible by the VAE factor "
                             f"{self.vae_scale_factor}; pad the input first")
        x = (x01 * 2 - 1).to(self.base_dtype)  # (B, 3, H, W) in [-1, 1]
        posterior = self.vae.encode(x).latent_dist
        z = posterior.sample() if (self.training and self.latent_mode == "sample") else posterior.mode()
        return (z.float() - self.shift_factor) * self.scaling_factor  # (B, C, h, w)

    def predict_x0(self, z_t: Tensor, model_output: Tensor, timestep: int) -> Tensor:
        """One-step clean-latent prediction from the UNet output at ``timestep`` (float32)."""
        abar = self.alphas_cumprod[timestep].to(device=z_t.device, dtype=torch.float32)
        z_t, model_output = z_t.float(), model_output.float()
        if self.prediction_type == "epsilon":
            return (z_t - (1 - abar).sqrt() * model_output) / abar.sqrt()
        return abar.sqrt() * z_t - (1 - abar).sqrt() * model_output  # v_prediction

    def denoise(self, z: Tensor, adapter_name: str | None = None, timestep: int | None = None) -> Tensor:
        """Latent z_L (B, C, h, w) -> z_H (B, C, h, w) float32. ``adapter_name`` switches the active adapter
        (the switch persists); ``None`` keeps the current one."""
        if adapter_name is not None and adapter_name != self._active_adapter:
            self.set_adapter(adapter_name)
        t = self.timestep if timestep is None else int(timestep)
        self._check_timestep(t)
        batch = z.shape[0]
        cond = self.prompt_embeds.to(self.base_dtype).expand(batch, -1, -1)  # (B, L, D)
        t_in = torch.full((batch,), t, device=z.device, dtype=torch.long)
        out = self.unet(z.to(self.base_dtype), t_in, encoder_hidden_states=cond).sample  # (B, C, h, w)
        return self.predict_x0(z, out, t)

    def decode(self, z: Tensor) -> Tensor:
        """Scaled latent (B, C, h, w) -> image (B, 3, h*f, w*f) in [0, 1], float32."""
        latents = (z / self.scaling_factor + self.shift_factor).to(self.base_dtype)
        y = self.vae.decode(latents).sample.float().clamp(-1, 1)  # (B, 3, H, W)
        return (y + 1) / 2

    def forward(self, lq_up: Tensor, lq: Tensor | None = None, timestep: int | None = None) -> Tensor:
        """``lq_up`` (B, 3, H, W) in [0, 1], already at the target size -> SR (B, 3, H, W) in [0, 1].
        ``lq`` (the raw LR) is unused here (kept for the common generator interface). The VAE encoder runs
        without grad (nothing trainable lies before it)."""
        with torch.no_grad():
            z_l = self.encode(lq_up)  # (B, C, h, w)
        return self.decode(self.denoise(z_l, timestep=timestep))
