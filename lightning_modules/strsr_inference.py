"""StrSR inference (paper sec. 3.1-3.2) as a generator-only LightningModule for ``onestep-sr predict`` / ``test``."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from lightning_modules.inference_base import GeneratorInference
from models.generators.dit_onestep import OneStepDiTGenerator
from models.generators.released_strsr import is_released_layout, load_released, released_paths
from models.pretrained import MissingWeightsError, WeightArg, check_weight_file, declare_weights
from models.resize import bicubic_upsample


@declare_weights(weights=WeightArg(
    "StrSR weights (released folder or our export)", file=True,
    how="hf download jkwang28/StrSR --include 'StrSR-flux/*' 'StrSR-zimage/*' --local-dir pretrained (the released "
        "folders hold state_dict.pth + projector.pth), or train StrSR and point this key at its "
        "runs/<run>/version_<N>/export/strsr.safetensors (README 'Released StrSR models')"))
class StrSRInference(GeneratorInference):
    """x -> bicubic x``scale`` -> reflect pad to 16 -> pixel tiles: VAE encode -> one Euler step of the DiT at sigma
    (with the LoRA) -> VAE decode -> blend -> clamp, the condition computed once per image from the raw LR (eq. 2-6).

    Follows the released inference (jkwang28/StrSR ``test_flux.py`` / ``test_zimage.py``, ``infer_tiled``): 1024 px
    tiles with 64 px overlap blended with the feather mask on interior tile edges only (``blend: feather``), the
    VAE latent *sampled* (``latent_dist.sample()``, ``latents: sample``), networks under bf16 autocast
    (``autocast: bf16``; the released scripts autocast on GPUs with bf16 weights), the VLM features and the adaptive
    MLP outside the autocast. The condition is the generator's: ``VLMCondition`` (default) through the adaptive MLP,
    or a fixed prompt embedding (``TextEmbeddingCondition`` at the DiT's text width: no MLP, as the released
    ``--conditioning txt``).

    Args:
        generator: a ``OneStepDiTGenerator`` built with ``lora: null`` (the adapter comes from ``weights``).
        weights: the released folder (``pretrained/StrSR-flux`` or ``pretrained/StrSR-zimage``: ``state_dict.pth``
            + ``projector.pth``, or the ``state_dict.pth`` file), or our export (the ``.safetensors`` LoRA file
            with its ``<stem>_mlp.safetensors`` beside it, or an export folder), loaded frozen.
        scale: the upscaling factor of batches without their own ``scale`` (StrSR: x4). Any integer factor runs
            (the bicubic pre-upsampling sets it, as the released ``--bicubic-scale``).
        tile, tile_overlap: pixel tiles (multiples of the generator's ``pad_multiple``) and their overlap.
        blend: ``feather`` (released) or a :func:`~models.inference.tiling.blend_weights` kind (``linear``: the
            symmetric ramps of our training module's evaluation).
        latents: ``sample`` (released) or ``mode`` (deterministic: the mean of the VAE posterior).
        autocast: ``bf16`` (released on GPUs) or ``null`` (the weights' own dtype, e.g. fp32 demos).
    """

    def __init__(
        self,
        generator: OneStepDiTGenerator,
        weights: str,
        scale: int = 4,
        tile: int = 1024,
        tile_overlap: int = 64,
        blend: str = "feather",
        latents: Literal["sample", "mode"] = "sample",
        autocast: Literal["bf16"] | None = "bf16",
    ) -> None:
        super().__init__()
        if latents not in ("sample", "mode"):
            raise ValueError(f"latents must be 'sample' or 'mode', got {latents!r}")
        if autocast not in ("bf16", None):
            raise ValueError(f"autocast must be 'bf16' or null, got {autocast!r}")
        if tile % generator.pad_multiple:
            raise ValueError(f"tile={tile} must be a multiple of the generator's pad_multiple={generator.pad_multiple}")
        if scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        self.generator = generator
        self.scale, self.tile, self.tile_overlap, self.blend = int(scale), tile, tile_overlap, blend
        self.latents, self.autocast = latents, autocast
        self.weights = load_weights(generator, weights)
        generator.requires_grad_(False)
        generator.eval()

    @property
    def native_scale(self) -> int:
        return self.scale

    def check_scale(self, scale: int) -> None:
        if scale < 1:
            raise ValueError(f"the batch asks for x{scale}; StrSR upscales by a positive integer factor")

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    def restore(self, lq: Tensor, scale: int, cond_features: Tensor | None = None) -> Tensor:
        """(B, 3, h, w) [0, 1] -> (B, 3, h*scale, w*scale) [0, 1]; ``cond_features``: cached VLM features of the
        batch (``data.feature_cache``) instead of running the VLM."""
        gen = self.generator
        # (B, L, text_dim): the raw LR, once per image, outside the autocast
        cond = gen.encode_condition(lq, lq.shape[0], cond_features)
        lq_up = bicubic_upsample(lq, scale)  # (B, 3, h*scale, w*scale), float32
        with self._autocast(lq.device):  # reflect pad -> tiles -> blend -> crop -> clamp
            out = gen.tiled_restore(lq_up, cond, tile=self.tile, overlap=self.tile_overlap, weight=self.blend,
                                    sample=self.latents == "sample")
        return out.float()


def load_weights(generator: OneStepDiTGenerator, weights: str) -> str:
    """Load the released folder / ``state_dict.pth`` or our export into ``generator`` (frozen, active); returns
    which layout it was (``released`` or ``export``). A missing file raises :class:`MissingWeightsError`."""
    path = Path(weights).expanduser()
    if is_released_layout(path):
        lora_file, _ = released_paths(path)
        if not lora_file.is_file():
            raise _missing(weights, f"no '{lora_file.name}' in '{lora_file.parent}'")
        load_released(generator, path)
        return "released"
    lora_file, mlp_file = OneStepDiTGenerator.export_paths(path)
    if not lora_file.is_file():
        raise _missing(weights, f"neither a released folder (state_dict.pth) nor an export ('{lora_file}')")
    for file in (lora_file, mlp_file):
        if file.is_file():
            check_weight_file("StrSR export", file)
    generator.load_adapter(path, trainable=False)
    generator.set_adapter(generator.active_adapter or generator.adapter_name)
    return "export"


def _missing(weights: str, what: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"Missing weights for StrSR: '{weights}': {what}. Download the released models (hf download jkwang28/StrSR "
        "--include 'StrSR-flux/*' 'StrSR-zimage/*' --local-dir pretrained) or point model.init_args.weights at the "
        "export of a StrSR run (runs/<run>/version_<N>/export/strsr.safetensors).")
