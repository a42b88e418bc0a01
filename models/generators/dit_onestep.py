"""One-step DiT super-resolution generator of StrSR (paper sec. 3.1-3.2, eq. 2-6).

    z_t1 = E_VAE(bicubic-upsampled LR)                       (eq. 6; the LQ latent *is* z at sigma, no noise added)
    c    = f_adapt(E_VLM(raw LR))                            (eq. 5)
    z_0  = z_t1 - sigma * G_theta(z_t1, sigma, c)            (one Euler step of the rectified flow, eq. 2-4)
    x    = D_VAE(z_0)

The backbone (VAE, latent layout, transformer call, time convention) is a :class:`DiTBackend` strategy:
``Flux2Backend`` (FLUX.2 [klein]) or ``ZImageBackend`` (Z-Image). LoRA (rank 256, alpha 256, gaussian, fp32) on
the backend's documented Linear layers and the adaptive MLP are the only trainable parameters.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from models.conditions.adapter_mlp import AdaptiveMLP
from models.conditions.text import ConditionEncoder
from models.inference.tiling import pad_to_multiple, tiled_apply
from models.lora import LORA_WEIGHT_NAME, LoraConfig, add_adapter, adapter_named_parameters, adapter_names
from models.lora import load_adapter as load_lora_file
from models.lora import save_adapter, set_trainable
from models.pretrained import Source, freeze, from_hf, resolve_dtype

__all__ = ["DiTBackend", "OneStepDiTGenerator", "resolve_lora_targets", "MLP_WEIGHT_NAME"]

MLP_WEIGHT_NAME = "adapter_mlp.safetensors"


class DiTBackend(nn.Module):
    """A frozen DiT backbone (transformer + VAE) seen through one latent convention.

    - ``encode(x01 (B,3,H,W) [0,1], sample) -> z`` model-space latent (B, C, h, w), fp32;
    - ``velocity(z, cond (B,L,text_dim), sigma) -> v`` (B, C, h, w), fp32, in the FLUX convention
      z_t = (1 - sigma) z_0 + sigma * noise, v = noise - z_0, hence z_0 = z_t - sigma * v;
    - ``decode(z) -> x01`` (B, 3, H, W), the decoder output mapped from [-1, 1] to [0, 1], *not* clamped.

    Subclasses set ``transformer``, ``vae`` and ``lora_targets`` (module-name suffixes). The whole backend is
    frozen and stays in eval mode (LoRA layers injected later live in ``transformer`` and are trained by name).
    """

    lora_targets: tuple[str, ...] = ()
    transformer: nn.Module
    vae: nn.Module

    @property
    def text_dim(self) -> int:
        raise NotImplementedError

    @property
    def pixel_multiple(self) -> int:
        """Input sizes must be multiples of this: VAE downsampling x 2 (2x2 patches in both backbones)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1) * 2

    def encode(self, x01: Tensor, sample: bool = False) -> Tensor:
        raise NotImplementedError

    def velocity(self, z: Tensor, cond: Tensor, sigma: float) -> Tensor:
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def train(self, mode: bool = True) -> "DiTBackend":
        return super().train(False)  # frozen base: always eval

    def load_parts(self, family: str, transformer_cls: type, vae_cls: type, transformer: Source, vae: Source,
                   dtype: str, gradient_checkpointing: bool) -> None:
        """Load (or build from a config) the frozen transformer and VAE of one model family."""
        torch_dtype = resolve_dtype(dtype)
        self.transformer = freeze(from_hf(f"{family} transformer", transformer_cls, transformer, dtype=torch_dtype,
                                          yaml_key="generator.backend.transformer.pretrained"))
        self.vae = freeze(from_hf(f"{family} VAE", vae_cls, vae, dtype=torch_dtype,
                                  yaml_key="generator.backend.vae.pretrained"))
        if gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()


def resolve_lora_targets(model: nn.Module, suffixes: list[str] | tuple[str, ...]) -> list[str]:
    """Full names of the ``nn.Linear`` modules of ``model`` whose name ends with one of ``suffixes`` (at a dot).

    Needed because a suffix such as FLUX.2's ``to_out`` names a Linear in single blocks but a ModuleList in
    double blocks (peft refuses the latter).
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    def is_linear(module: nn.Module) -> bool:  # a plain Linear, or one already wrapped by an earlier adapter
        base = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
        return isinstance(base, nn.Linear)

    names = sorted(
        name for name, module in model.named_modules()
        if is_linear(module) and any(name == s or name.endswith("." + s) for s in suffixes)
    )
    if not names:
        raise ValueError(f"no Linear layer of {type(model).__name__} matches the LoRA targets {list(suffixes)}")
    return names


class OneStepDiTGenerator(nn.Module):
    """StrSR generator: one rectified-flow Euler step from the LQ latent at ``sigma`` (eq. 2-6).

    Args:
        backend: ``Flux2Backend`` or ``ZImageBackend``.
        condition: ``VLMCondition`` (features of the raw LR, mapped by a trainable :class:`AdaptiveMLP`) or
            ``TextEmbeddingCondition`` (a fixed embedding; an MLP is added only if its width differs from the
            backbone's text width).
        sigma: the flow time of the LQ latent (0.8: FLUX timestep 0.8, Z-Image model time 0.2).
        lora: LoRA settings (StrSR: rank 256, alpha 256, gaussian); ``target_modules=None`` uses the backend's
            documented suffixes. ``None``: no trainable adapter (inference; load one with :meth:`load_adapter`).
        adapter_name: name of the trained adapter.
        pad_multiple: inputs are reflect-padded to multiples of this (a multiple of the backend's
            ``pixel_multiple``) and the output cropped back.
        mlp_hidden: hidden width of the adaptive MLP (``None``: text_dim // 2).
        sample_latents: in training mode, encode with ``latent_dist.sample()`` (the released code); eval mode
            always uses the mode.
        clamp_train: clamp the training output to [0, 1]. Default False: the released trainer
            (jkwang28/StrSR, ``HYPIR/trainer/base.py``, ``optimize_generator_image``) computes L1, LPIPS, FDL and the
            discriminator input on the unclamped decoder output. Evaluation outputs are always clamped (after
            blending the tiles, as the released ``test_flux.py`` / ``test_zimage.py``).
    """

    def __init__(
        self,
        backend: DiTBackend,
        condition: ConditionEncoder,
        sigma: float = 0.8,
        lora: LoraConfig | None = None,
        adapter_name: str = "strsr",
        pad_multiple: int = 16,
        mlp_hidden: int | None = None,
        sample_latents: bool = True,
        clamp_train: bool = False,
    ) -> None:
        super().__init__()
        if pad_multiple % backend.pixel_multiple:
            raise ValueError(f"pad_multiple={pad_multiple} must be a multiple of {backend.pixel_multiple}")
        self.backend, self.condition = backend, condition
        self.sigma, self.adapter_name, self.pad_multiple = float(sigma), adapter_name, pad_multiple
        self.sample_latents = sample_latents
        self.clamp_train = clamp_train
        needs_mlp = condition.needs_adapter or condition.feature_dim != backend.text_dim
        self.mlp = AdaptiveMLP(condition.feature_dim, backend.text_dim, mlp_hidden) if needs_mlp else None
        self.lora = lora
        self._active_adapter: str | None = None  # adapter used by forward
        if lora is not None:
            targets = resolve_lora_targets(backend.transformer, lora.target_modules or backend.lora_targets)
            add_adapter(backend.transformer, dataclasses.replace(lora, target_modules=targets), adapter_name)
            set_trainable(backend.transformer, adapter_name)
            self._active_adapter = adapter_name

    # --- parameters and modes ---------------------------------------------------------------------------------
    def trainable_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """LoRA of ``adapter_name`` + the adaptive MLP, named as in ``self.named_parameters()``."""
        if self.lora is not None:
            for name, p in adapter_named_parameters(self.backend.transformer, self.adapter_name):
                yield f"backend.transformer.{name}", p
        if self.mlp is not None:
            for name, p in self.mlp.named_parameters():
                yield f"mlp.{name}", p

    def train(self, mode: bool = True) -> "OneStepDiTGenerator":
        super().train(mode)
        self.backend.eval()
        self.condition.eval()
        return self

    # --- adapters -----------------------------------------------------------------------------------------------
    @property
    def active_adapter(self) -> str | None:
        """The LoRA adapter of the transformer that :meth:`forward` uses (``None``: the bare transformer)."""
        return self._active_adapter

    @property
    def adapters(self) -> list[str]:
        return adapter_names(self.backend.transformer)

    def set_adapter(self, name: str | None) -> None:
        """Make ``name`` the only active LoRA adapter of the transformer (``None``: run the bare transformer).
        Requires-grad stays on the trained adapter only (peft's own ``set_adapter`` would flip it)."""
        transformer = self.backend.transformer
        if name is None:
            if self.adapters:
                transformer.disable_adapters()
        else:
            if name not in self.adapters:
                raise ValueError(f"adapter '{name}' not found; loaded adapters: {self.adapters}")
            transformer.enable_adapters()
            transformer.set_adapter(name)
        set_trainable(transformer, self.adapter_name if self.lora is not None else None)
        self._active_adapter = name

    # --- forward ----------------------------------------------------------------------------------------------
    def encode_condition(self, lq: Tensor | None, batch_size: int, cond_features: Tensor | None = None) -> Tensor:
        """Condition tokens at the backbone's text width: (B, L, text_dim). ``cond_features`` (B, L, D_feat)
        (e.g. read from the feature cache by the data pipeline) replaces running the condition encoder."""
        feats = cond_features if cond_features is not None else self.condition(lq, batch_size)
        return self.mlp(feats) if self.mlp is not None else feats.float()

    def denoise(self, z: Tensor, cond: Tensor, sigma: float | None = None) -> Tensor:
        """One Euler step from ``sigma`` (default: the generator's ``sigma``) to 0: z_0 = z - sigma * v (fp32),
        z (B, C, h, w)."""
        s = self.sigma if sigma is None else float(sigma)
        v = self.backend.velocity(z, cond, s)
        return z.float() - s * v

    def restore(self, lq_up: Tensor, cond: Tensor, clamp: bool | None = None, sigma: float | None = None,
                sample: bool | None = None) -> Tensor:
        """SR of ``lq_up`` (B, 3, H, W) [0, 1] given condition tokens (B, L, text_dim) -> (B, 3, H, W), clamped to
        [0, 1] when ``clamp`` (default: in eval mode, or in training with ``clamp_train``). ``sigma``: the flow
        time of this pass (default: the generator's ``sigma``; the twice-upsampling passes give theirs).
        ``sample``: encode with ``latent_dist.sample()`` instead of the mode (default: in training mode with
        ``sample_latents``; the released StrSR inference samples)."""
        h, w = lq_up.shape[-2:]
        x = pad_to_multiple(lq_up, self.pad_multiple)
        if sample is None:
            sample = self.training and self.sample_latents
        with torch.no_grad():  # frozen encoder, no gradient to the input needed
            z = self.backend.encode(x, sample=sample)
        out = self.backend.decode(self.denoise(z, cond, sigma))[..., :h, :w]
        if clamp is None:
            clamp = self.clamp_train or not self.training
        return out.clamp(0, 1) if clamp else out

    def forward(self, lq_up: Tensor, lq: Tensor | None = None, cond_features: Tensor | None = None,
                sigma: float | None = None) -> Tensor:
        """lq_up (B, 3, H, W) [0, 1] at the target size, lq (B, 3, h, w) the raw LR for the VLM (or cached
        ``cond_features``) -> SR (B, 3, H, W) in [0, 1] (in training ~[0, 1], clamped only with ``clamp_train``).
        ``sigma``: the flow time of this pass (default: the generator's ``sigma``)."""
        return self.restore(lq_up, self.encode_condition(lq, lq_up.shape[0], cond_features), sigma=sigma)

    def tiled_restore(self, lq_up: Tensor, cond: Tensor, tile: int = 1024, overlap: int = 64,
                      sigma: float | None = None, weight: str = "linear", sample: bool | None = None) -> Tensor:
        """Inference on large images with precomputed condition tokens (B, L, text_dim), shared by every tile:
        ``tile`` x ``tile`` pixel tiles (``overlap`` shared pixels) of ``lq_up`` (B, 3, H, W) [0, 1], restored at
        ``sigma`` with the active adapter, blended (``weight``: linear feather, or ``feather``, the released mask of
        jkwang28/StrSR ``test_flux.py``) and clamped after blending -> (B, 3, H, W) [0, 1]. An input that fits one
        tile is restored whole (bit-identical to :meth:`restore` with ``clamp=True``). ``sample``: as in
        :meth:`restore`, per tile."""
        if tile % self.pad_multiple:
            raise ValueError(f"tile={tile} must be a multiple of pad_multiple={self.pad_multiple}")
        h, w = lq_up.shape[-2:]
        x = pad_to_multiple(lq_up, self.pad_multiple)  # (B, 3, H', W')
        out = tiled_apply(x, lambda t: self.restore(t, cond, clamp=False, sigma=sigma, sample=sample), tile=tile,
                          overlap=overlap, scale=1, weight=weight)
        return out[..., :h, :w].clamp(0, 1)  # clamped after blending, as the released inference

    def tiled_forward(self, lq_up: Tensor, lq: Tensor | None = None, cond_features: Tensor | None = None,
                      tile: int = 1024, overlap: int = 64, sigma: float | None = None) -> Tensor:
        """Inference on large images: the condition is computed once from the whole LR (StrSR's tiled inference),
        then shared by the pixel tiles of :meth:`tiled_restore`."""
        cond = self.encode_condition(lq, lq_up.shape[0], cond_features)  # (B, L, text_dim), once per image
        return self.tiled_restore(lq_up, cond, tile, overlap, sigma=sigma)

    # --- export / import --------------------------------------------------------------------------------------
    @staticmethod
    def export_paths(path: str | os.PathLike) -> tuple[Path, Path]:
        """(LoRA file, MLP file) of an export: a directory holds ``pytorch_lora_weights.safetensors`` and
        ``adapter_mlp.safetensors``; a path ending in ``.safetensors`` is the LoRA file, the MLP sits next to it
        as ``<stem>_mlp.safetensors``."""
        p = Path(path).expanduser()
        if p.suffix == ".safetensors":
            return p, p.with_name(f"{p.stem}_mlp.safetensors")
        return p / LORA_WEIGHT_NAME, p / MLP_WEIGHT_NAME

    def export_adapter(self, path: str | os.PathLike) -> list[Path]:
        """Write the LoRA (diffusers/peft format) and the adaptive MLP (plain state dict) as safetensors."""
        from safetensors.torch import save_file

        lora_file, mlp_file = self.export_paths(path)
        written = []
        if self.lora is not None:
            written.append(save_adapter(self.backend.transformer, self.adapter_name, lora_file))
        if self.mlp is not None:
            mlp_file.parent.mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().cpu().contiguous() for k, v in self.mlp.state_dict().items()}
            save_file(state, str(mlp_file), metadata={"in_dim": str(self.mlp.in_dim), "out_dim": str(self.mlp.out_dim),
                                                      "hidden": str(self.mlp.hidden)})
            written.append(mlp_file)
        if not written:
            raise ValueError("nothing to export: the generator has neither a LoRA adapter nor an adaptive MLP")
        return written

    def load_adapter(self, path: str | os.PathLike, name: str | None = None, trainable: bool = False) -> None:
        """Load an export of :meth:`export_adapter`. The LoRA goes into adapter ``name`` (default
        ``adapter_name``): into the existing adapter's weights if it exists, else as a new adapter that becomes
        the active one."""
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file

        lora_file, mlp_file = self.export_paths(path)
        name = name or self.adapter_name
        transformer = self.backend.transformer
        if lora_file.is_file():
            if name in adapter_names(transformer):
                result = set_peft_model_state_dict(transformer, load_file(str(lora_file)), adapter_name=name)
                if getattr(result, "unexpected_keys", None):
                    raise KeyError(f"LoRA file {lora_file} has keys the adapter lacks: {result.unexpected_keys[:5]}")
                for _, p in adapter_named_parameters(transformer, name):
                    p.requires_grad_(trainable)
            else:
                load_lora_file(transformer, lora_file, name, trainable=trainable)
                self._active_adapter = name
        elif self.lora is not None:
            raise FileNotFoundError(f"no LoRA file at {lora_file}")
        if self.mlp is not None:
            if not mlp_file.is_file():
                raise FileNotFoundError(f"no adaptive-MLP file at {mlp_file}")
            self.mlp.load_state_dict(load_file(str(mlp_file)))
