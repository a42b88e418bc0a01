"""The file layout of the released StrSR models (hub ``jkwang28/StrSR``: ``StrSR-flux/`` and ``StrSR-zimage/``), read
into and written from :class:`~models.generators.dit_onestep.OneStepDiTGenerator`.

Facts from the public repository jkwang28/StrSR (the code below is our own):

- ``state_dict.pth`` (the LoRA): ``torch.save`` of ``{name: tensor}`` for every parameter of the peft-wrapped
  transformer with ``requires_grad`` (``HYPIR/trainer/checkpoint_utils.py``, ``save_trainable_state_dict``). The
  transformer is wrapped with ``peft.get_peft_model`` (adapter ``default``, ``bias="none"``;
  ``HYPIR/trainer/flux_vlm.py`` / ``zimage_vlm.py``, ``init_generator``), so the keys are
  ``base_model.model.<module>.lora_A.default.weight`` and ``...lora_B.default.weight``, fp32 (the trainer casts the
  LoRA parameters to fp32). LoRA rank 256, ``lora_alpha`` = rank (``test_flux.py`` / ``test_zimage.py``,
  ``_init_generator``: ``LoraConfig(r=lora_rank, lora_alpha=lora_rank, init_lora_weights="gaussian")``); targets:
  FLUX.2 ``to_q, to_k, to_v, to_out.0, add_k_proj, add_q_proj, add_v_proj, to_add_out, to_out, to_qkv_mlp_proj``
  resolved to Linear layers by name suffix, Z-Image ``to_q, to_k, to_v, to_out.0, feed_forward.w1/w2/w3`` given to
  peft as they are. Loading requires every trainable key, no other key and equal shapes
  (``HYPIR/utils/inference.py``, ``load_trainable_weights``).
- ``projector.pth`` (the adaptive MLP of paper eq. 5): ``torch.save(projector.state_dict())`` of
  ``nn.Sequential(Linear(qwen_dim, D/2), SiLU(), Linear(D/2, D))`` (keys ``0.weight, 0.bias, 2.weight, 2.bias``),
  created in the run's weight dtype (bf16) (``checkpoint_utils.py``, ``save_qwen_projectors``;
  ``flux_vlm.py`` ``init_qwen_projector``). D = ``joint_attention_dim`` (FLUX.2) or ``cap_feat_dim`` (Z-Image).
  The text-prompt mode (``--conditioning txt``) uses no projector.

Key mapping to our names (the transformer's diffusers ``add_adapter`` LoRA, adapter ``name``; our MLP):

    base_model.model.<module>.lora_A.default.weight  <->  backend.transformer: <module>.lora_A.<name>.weight
    base_model.model.<module>.lora_B.default.weight  <->  backend.transformer: <module>.lora_B.<name>.weight
    projector: 0.weight, 0.bias, 2.weight, 2.bias    <->  mlp: net.0.weight, net.0.bias, net.2.weight, net.2.bias
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from models.lora import LoraConfig, add_adapter, adapter_named_parameters, adapter_names

__all__ = ["RELEASED_LORA_FILE", "RELEASED_PROJECTOR_FILE", "is_released_layout", "released_paths",
           "released_to_ours", "ours_to_released", "load_released", "save_released"]

RELEASED_LORA_FILE = "state_dict.pth"
RELEASED_PROJECTOR_FILE = "projector.pth"
_PEFT_PREFIX = "base_model.model."
_RELEASED_ADAPTER = "default"
_KEY = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B)\.(?P<adapter>[^.]+)\.weight$")


def is_released_layout(path: str | os.PathLike) -> bool:
    """A folder holding ``state_dict.pth``, or a ``.pth`` file: the released layout (else our safetensors export)."""
    p = Path(path).expanduser()
    return (p.is_dir() and (p / RELEASED_LORA_FILE).is_file()) or p.suffix == ".pth"


def released_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(``state_dict.pth``, ``projector.pth``) of a released folder; a ``.pth`` file is the LoRA file and the
    projector sits next to it (as the released scripts take ``--weight_path`` as a folder or a file)."""
    p = Path(path).expanduser()
    if p.suffix == ".pth":
        return p, p.with_name(RELEASED_PROJECTOR_FILE)
    return p / RELEASED_LORA_FILE, p / RELEASED_PROJECTOR_FILE


def released_to_ours(state: Mapping[str, Tensor], adapter_name: str) -> dict[str, Tensor]:
    """Released LoRA keys -> our transformer parameter names (``<module>.lora_A.<adapter_name>.weight``)."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        m = _KEY.match(key.removeprefix(_PEFT_PREFIX)) if key.startswith(_PEFT_PREFIX) else None
        if m is None or m["adapter"] != _RELEASED_ADAPTER:
            raise KeyError(f"'{key}' is not a released StrSR LoRA key (base_model.model.<module>.lora_A|lora_B."
                           f"{_RELEASED_ADAPTER}.weight)")
        out[f"{m['module']}.{m['kind']}.{adapter_name}.weight"] = value
    return out


def ours_to_released(state: Mapping[str, Tensor], adapter_name: str) -> dict[str, Tensor]:
    """Inverse of :func:`released_to_ours` for the parameters of one adapter."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        m = _KEY.match(key)
        if m is None or m["adapter"] != adapter_name:
            raise KeyError(f"'{key}' is not a LoRA weight of adapter '{adapter_name}'")
        out[f"{_PEFT_PREFIX}{m['module']}.{m['kind']}.{_RELEASED_ADAPTER}.weight"] = value
    return out


def _torch_load(path: Path) -> dict[str, Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"'{path}' does not hold a state dict of tensors")
    return dict(state)


def _load_lora(transformer: nn.Module, state: dict[str, Tensor], name: str, path: Path) -> None:
    """Strict load (every key of the adapter present, no other, same shapes), as ``load_trainable_weights``. The
    adapter is created from the file (targets and rank from its keys, alpha = rank) when it does not exist."""
    ours = released_to_ours(state, name)
    if name not in adapter_names(transformer):
        modules = sorted({_KEY.match(k)["module"] for k in ours})
        ranks = {v.shape[0] for k, v in ours.items() if ".lora_A." in k}
        if len(ranks) != 1:
            raise ValueError(f"'{path}': LoRA ranks differ between modules ({sorted(ranks)})")
        rank = ranks.pop()
        try:
            add_adapter(transformer, LoraConfig(rank=rank, alpha=rank, init="gaussian", target_modules=modules), name)
        except ValueError as err:  # peft: target modules not found in this transformer
            raise RuntimeError(f"'{path}' does not match the generator's transformer (another backbone?): {err}") from err
    params = dict(adapter_named_parameters(transformer, name))
    missing, unexpected = sorted(params.keys() - ours.keys()), sorted(ours.keys() - params.keys())
    shapes = [f"{k}: file {tuple(ours[k].shape)} != model {tuple(p.shape)}"
              for k, p in params.items() if k in ours and ours[k].shape != p.shape]
    if missing or unexpected or shapes:
        raise RuntimeError(f"'{path}' does not match the generator's LoRA '{name}': missing {missing[:4]}, "
                           f"unexpected {unexpected[:4]}, shape mismatches {shapes[:4]} (another backbone, or "
                           "other LoRA targets / rank)")
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(ours[k].to(p.dtype))


def load_released(generator: nn.Module, path: str | os.PathLike, name: str | None = None,
                  trainable: bool = False) -> None:
    """Load a released ``StrSR-flux/`` or ``StrSR-zimage/`` folder (or its ``state_dict.pth``) into ``generator``
    (a ``OneStepDiTGenerator``): the LoRA into adapter ``name`` (default: the generator's ``adapter_name``), made
    the active adapter, and ``projector.pth`` into the adaptive MLP when the generator has one (VLM condition)."""
    lora_file, projector_file = released_paths(path)
    name = name or generator.adapter_name
    if not lora_file.is_file():
        raise FileNotFoundError(f"no released StrSR LoRA file at '{lora_file}'")
    transformer = generator.backend.transformer
    _load_lora(transformer, _torch_load(lora_file), name, lora_file)
    for _, p in adapter_named_parameters(transformer, name):
        p.requires_grad_(trainable)
    generator.set_adapter(name)
    if generator.mlp is not None:
        if not projector_file.is_file():
            raise FileNotFoundError(f"no released StrSR projector at '{projector_file}' (the VLM condition needs it; "
                                    "a fixed text prompt does not)")
        state = _torch_load(projector_file)
        generator.mlp.net.load_state_dict({k: v.to(generator.mlp.net[0].weight.dtype) for k, v in state.items()})
        generator.mlp.requires_grad_(trainable)


def save_released(generator: nn.Module, folder: str | os.PathLike,
                  projector_dtype: torch.dtype = torch.bfloat16) -> list[Path]:
    """Write ``generator``'s trained LoRA and MLP in the released layout: ``<folder>/state_dict.pth`` (fp32 LoRA,
    released keys) and ``<folder>/projector.pth`` (in ``projector_dtype``, bf16 as released)."""
    out = Path(folder).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    name = generator.adapter_name
    lora = {k: p.detach().cpu().float().contiguous()
            for k, p in adapter_named_parameters(generator.backend.transformer, name)}
    if not lora:
        raise ValueError(f"the generator has no LoRA adapter '{name}' to save")
    torch.save(ours_to_released(lora, name), out / RELEASED_LORA_FILE)
    written = [out / RELEASED_LORA_FILE]
    if generator.mlp is not None:
        torch.save({k: v.detach().cpu().to(projector_dtype) for k, v in generator.mlp.net.state_dict().items()},
                   out / RELEASED_PROJECTOR_FILE)
        written.append(out / RELEASED_PROJECTOR_FILE)
    return written
