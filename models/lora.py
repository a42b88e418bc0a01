"""Named LoRA adapters on diffusers models (SD UNet, DiT transformers), shared by every generator.

TUDSR: rank 32, alpha = rank, gaussian init, fp32 LoRA weights on a (possibly bf16) base; StrSR (sec. 4.1): rank 256,
same otherwise.

Facts this module relies on (peft 0.21 + diffusers 0.42):

- ``model.add_adapter(cfg, adapter_name)`` activates only the newest adapter, and peft's ``set_adapter`` flips
  ``requires_grad`` of every adapter it (de)activates. Trainable parameters are therefore selected **by name**
  (``.lora_A.<name>.`` / ``.lora_B.<name>.``), and :func:`set_trainable` must be re-applied after any switch.
- Files are written in the diffusers/peft LoRA format, exactly what ``save_lora_adapter`` writes: keys of
  ``get_peft_model_state_dict`` (no adapter name, e.g. ``down_blocks.0.attentions.0.proj_in.lora_A.weight``),
  safetensors metadata ``{"format": "pt", "lora_adapter_metadata": <LoraConfig as JSON>}``. Load them with
  ``unet.load_lora_adapter(path, prefix=None, adapter_name=..., use_safetensors=True)``. Without
  ``use_safetensors=True`` (or a ``weight_name`` ending in ``.safetensors``) diffusers 0.42 reads the file through its
  ``.bin`` path, drops the metadata and assumes ``lora_alpha = r``: identical only when alpha == rank.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models.safetensors_io import save_safetensors

__all__ = [
    "LORA_WEIGHT_NAME",
    "LoraConfig",
    "add_adapter",
    "adapter_named_parameters",
    "adapter_names",
    "adapter_state_dict",
    "cast_adapter",
    "load_adapter",
    "save_adapter",
    "set_trainable",
]

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
_METADATA_KEY = "lora_adapter_metadata"  # diffusers' LORA_ADAPTER_METADATA_KEY
_ADAPTER_CONTAINERS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector")


@dataclass
class LoraConfig:
    """YAML-friendly LoRA settings, turned into a ``peft.LoraConfig`` by :func:`add_adapter`.

    Args:
        rank: LoRA rank r (TUDSR 32, StrSR 256).
        alpha: ``lora_alpha``; ``None`` means alpha = rank (scaling 1).
        init: peft ``init_lora_weights``: ``"gaussian"`` (A ~ N(0, 1/r), B = 0), ``"default"`` (Kaiming A, B = 0)
            or any other string peft accepts.
        target_modules: module-name suffixes to adapt; ``None`` lets the generator fill in its model's default list.
        dropout: ``lora_dropout``.
    """

    rank: int = 32
    alpha: float | None = None
    init: str = "gaussian"
    target_modules: list[str] | None = None
    dropout: float = 0.0

    def to_peft(self, default_targets: list[str] | None = None):  # -> peft.LoraConfig
        import peft

        targets = self.target_modules if self.target_modules is not None else default_targets
        if not targets:
            raise ValueError("LoraConfig.target_modules is empty: name the modules to adapt (e.g. to_q, to_k, ...)")
        init: str | bool = True if self.init in ("default", "kaiming", True) else self.init
        return peft.LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha if self.alpha is not None else self.rank,
            init_lora_weights=init,
            target_modules=list(targets),
            lora_dropout=self.dropout,
        )


def _name_pattern(adapter_name: str) -> re.Pattern[str]:
    containers = "|".join(_ADAPTER_CONTAINERS)
    return re.compile(rf"(^|\.)({containers})\.{re.escape(adapter_name)}(\.|$)")


def adapter_names(model: nn.Module) -> list[str]:
    """Names of the adapters injected into ``model`` (in insertion order)."""
    return list(getattr(model, "peft_config", {}) or {})


def adapter_named_parameters(model: nn.Module, adapter_name: str) -> Iterator[tuple[str, nn.Parameter]]:
    """The parameters of one adapter, selected by name (never by ``requires_grad``)."""
    pattern = _name_pattern(adapter_name)
    for name, param in model.named_parameters():
        if pattern.search(name):
            yield name, param


def cast_adapter(model: nn.Module, adapter_name: str, dtype: torch.dtype = torch.float32) -> None:
    """Cast one adapter's weights to ``dtype`` in place (fp32 LoRA over a bf16 base), keeping ``requires_grad``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if not isinstance(module, BaseTunerLayer):
            continue
        for attr in _ADAPTER_CONTAINERS:
            container = getattr(module, attr, None)
            if container is None or adapter_name not in container:
                continue
            if isinstance(container, nn.ParameterDict):
                old = container[adapter_name]
                container[adapter_name] = nn.Parameter(old.detach().to(dtype), requires_grad=old.requires_grad)
            else:
                container[adapter_name].to(dtype)


def set_trainable(model: nn.Module, adapter_name: str | None) -> None:
    """Make ``adapter_name``'s LoRA the only parameters of ``model`` that require grad (``None``: none do)."""
    model.requires_grad_(False)
    if adapter_name is not None:
        for _, param in adapter_named_parameters(model, adapter_name):
            param.requires_grad_(True)


def add_adapter(model: nn.Module, cfg: LoraConfig, adapter_name: str, default_targets: list[str] | None = None) -> None:
    """Inject a new named LoRA adapter (diffusers ``add_adapter``), cast its weights to fp32.

    As in diffusers, the new adapter becomes the active one. ``requires_grad`` is left as peft sets it (the new
    adapter trainable, earlier ones frozen); call :func:`set_trainable` to state it explicitly.
    """
    if adapter_name in adapter_names(model):
        raise ValueError(f"adapter '{adapter_name}' already exists in {type(model).__name__}")
    peft_cfg = cfg.to_peft(default_targets)
    with warnings.catch_warnings():  # "Already found a `peft_config` attribute": multiple adapters are intended
        warnings.filterwarnings("ignore", message=".*Already found a `peft_config`.*")
        if hasattr(model, "add_adapter"):
            model.add_adapter(peft_cfg, adapter_name=adapter_name)
        else:
            from peft import inject_adapter_in_model

            inject_adapter_in_model(peft_cfg, model, adapter_name=adapter_name)
    cast_adapter(model, adapter_name, torch.float32)


def adapter_state_dict(model: nn.Module, adapter_name: str) -> dict[str, torch.Tensor]:
    """peft's ``get_peft_model_state_dict``: keys without the adapter name (``...to_q.lora_A.weight``)."""
    from peft.utils import get_peft_model_state_dict

    if adapter_name not in adapter_names(model):
        raise ValueError(f"adapter '{adapter_name}' not found; loaded adapters: {adapter_names(model)}")
    return get_peft_model_state_dict(model, adapter_name=adapter_name)


def _file_path(path: str | os.PathLike) -> Path:
    """``*.safetensors`` is a file; anything else is a directory holding ``pytorch_lora_weights.safetensors``."""
    p = Path(os.path.expanduser(str(path)))
    return p if p.suffix == ".safetensors" else p / LORA_WEIGHT_NAME


def save_adapter(model: nn.Module, adapter_name: str, path: str | os.PathLike, prefix: str | None = None) -> Path:
    """Write one adapter as a standalone safetensors file in the diffusers/peft LoRA format; returns the file.

    ``path`` ending in ``.safetensors`` is the file; otherwise a directory receiving ``pytorch_lora_weights.safetensors``
    (as ``save_lora_adapter`` does). ``prefix`` (e.g. ``"unet"``, the pipelines' convention) prefixes every key and
    metadata entry; the default ``None`` matches ``load_lora_adapter(..., prefix=None)``.
    """

    state = {k: v.detach().to("cpu").contiguous() for k, v in adapter_state_dict(model, adapter_name).items()}
    config = model.peft_config[adapter_name].to_dict()
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
    if prefix:
        state = {f"{prefix}.{k}": v for k, v in state.items()}
        config = {f"{prefix}.{k}": v for k, v in config.items()}
    metadata = {"format": "pt", _METADATA_KEY: json.dumps(config, indent=2, sort_keys=True, default=str)}
    file = _file_path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(state, file, metadata=metadata)
    return file


def load_adapter(
    model: nn.Module,
    path: str | os.PathLike,
    adapter_name: str,
    trainable: bool = False,
    prefix: str | None = None,
) -> None:
    """Load a file written by :func:`save_adapter` (or diffusers' ``save_lora_adapter``) as ``adapter_name``.

    The loaded adapter becomes active, its weights are fp32, and its parameters require grad only if ``trainable``
    (other adapters keep their ``requires_grad``, whatever peft did while injecting).
    """
    file = _file_path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no LoRA file at '{file}' (expected a .safetensors file or a directory holding "
                                f"{LORA_WEIGHT_NAME})")
    from safetensors.torch import load_file

    before = {n: p.requires_grad for n, p in model.named_parameters()}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Already found a `peft_config`.*")
        model.load_lora_adapter(str(file), prefix=prefix, adapter_name=adapter_name, use_safetensors=True)
    if hasattr(model, "set_adapter"):
        model.set_adapter(adapter_name)
    # peft creates the layers in the base dtype, so the file's fp32 values went through bf16: cast, then copy again
    cast_adapter(model, adapter_name, torch.float32)
    state = load_file(str(file))
    pattern = _name_pattern(adapter_name)
    with torch.no_grad():
        for name, param in adapter_named_parameters(model, adapter_name):
            key = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}", name, count=1)
            key = f"{prefix}.{key}" if prefix else key
            if key not in state:
                raise KeyError(f"LoRA file '{file}' lacks '{key}' (adapter '{adapter_name}')")
            param.copy_(state[key])
    for name, param in model.named_parameters():
        if name in before:
            param.requires_grad_(before[name])
    for _, param in adapter_named_parameters(model, adapter_name):
        param.requires_grad_(trainable)
