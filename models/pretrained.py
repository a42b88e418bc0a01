"""Build any pretrained component one way: from a hub id, a local path, or an architecture config.

Every network that could carry pretrained weights (VAE, UNet, DiT, DINOv3, ConvNeXt, VLM, VGG) is described in
YAML by a :class:`Source` holding *exactly one* of

- ``pretrained``: a Hugging Face hub id (read from the local hub cache; offline unless ``HF_HUB_OFFLINE=0``)
  or a local directory / file;
- ``config``: an architecture config (a dict of constructor arguments); the network is built with random
  weights. Tests and the demo use this with tiny configs, so they build the *same classes* as real runs.

A missing weight never surfaces as a stack trace from deep inside a library: :func:`load_or_build` turns it into
one :class:`MissingWeightsError` naming the component, what was tried and how to provide it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

T = TypeVar("T")

__all__ = [
    "MissingWeightsError",
    "Source",
    "hub_offline",
    "load_or_build",
    "freeze",
    "resolve_dtype",
]


class MissingWeightsError(RuntimeError):
    """A pretrained component could not be found locally. The message says what and how to fix it."""


@dataclass
class Source:
    """Where a component comes from: ``pretrained`` (hub id or local path) *or* ``config`` (random init).

    Args:
        pretrained: hub id (``org/name``) or a local directory / file.
        subfolder: subfolder inside a diffusers-style repository (``unet``, ``vae``, ...).
        config: architecture config for random initialisation (tests, demo, benchmarks).
        revision: optional hub revision.
    """

    pretrained: str | None = None
    subfolder: str | None = None
    config: dict[str, Any] | None = None
    revision: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.pretrained is None) == (self.config is None):
            raise ValueError(
                "a component source needs exactly one of `pretrained` (hub id or local path) or `config` "
                f"(architecture config for random init); got pretrained={self.pretrained!r}, "
                f"config={'set' if self.config is not None else None}"
            )

    @property
    def is_local(self) -> bool:
        return self.pretrained is not None and Path(os.path.expanduser(self.pretrained)).exists()

    @property
    def path(self) -> str:
        """The local path (``~`` expanded) or the hub id."""
        assert self.pretrained is not None
        return os.path.expanduser(self.pretrained) if self.is_local else self.pretrained


def hub_offline() -> bool:
    """Offline by default: only ``HF_HUB_OFFLINE=0`` (or ``false``/``no``) allows downloads."""
    return os.environ.get("HF_HUB_OFFLINE", "1").strip().lower() not in {"0", "false", "no", "off"}


def _looks_like_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~"))


def _how_to_provide(component: str, source: Source, yaml_key: str | None) -> str:
    key = yaml_key or "<component>.pretrained"
    lines = []
    if source.pretrained and _looks_like_hub_id(source.pretrained):
        lines.append(
            f"  - on a machine with network: `huggingface-cli download {source.pretrained}` "
            "(gated repositories need `huggingface-cli login` and accepted terms), then copy the hub cache "
            "(~/.cache/huggingface/hub or $HF_HOME) here; or"
        )
        lines.append("  - allow downloads on this machine with HF_HUB_OFFLINE=0; or")
    lines.append(f"  - point `{key}` at a local folder/file holding the weights; or")
    lines.append(f"  - for a smoke test, give `config:` instead of `pretrained:` to build {component} with random weights.")
    return "\n".join(lines)


def missing_weights(component: str, source: Source, reason: str, yaml_key: str | None = None) -> MissingWeightsError:
    tried = f"local path '{source.pretrained}'" if source.is_local else f"hub id '{source.pretrained}'"
    if source.subfolder:
        tried += f" (subfolder '{source.subfolder}')"
    mode = "offline, hub cache only" if hub_offline() else "online"
    return MissingWeightsError(
        f"Missing weights for {component}: tried {tried} [{mode}] and failed: {reason}\n"
        f"How to provide them:\n{_how_to_provide(component, source, yaml_key)}"
    )


def load_or_build(
    component: str,
    source: Source,
    load: Callable[[str, Source, bool], T],
    build: Callable[[dict[str, Any]], T],
    yaml_key: str | None = None,
) -> T:
    """Load ``component`` from ``source.pretrained`` with ``load(path_or_id, source, local_only)`` or build it
    from ``source.config`` with ``build(config)``.

    Any failure of ``load`` that means "the weights are not here" (missing file, missing hub cache entry, a
    gated repo without credentials) becomes a :class:`MissingWeightsError`.
    """
    if source.config is not None:
        return build(dict(source.config))
    path = source.path
    if not source.is_local and not _looks_like_hub_id(path):
        raise missing_weights(component, source, "no such local file or directory, and not a hub id", yaml_key)
    try:
        return load(path, source, hub_offline())
    except MissingWeightsError:
        raise
    except (OSError, FileNotFoundError, ValueError, KeyError) as err:  # HF raises OSError/EnvironmentError subclasses
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise missing_weights(component, source, f"{type(err).__name__}: {first_line}", yaml_key) from None


def freeze(module: nn.Module) -> nn.Module:
    """Freeze and eval a module in place (frozen parts never enter optimizers or checkpoints)."""
    module.requires_grad_(False)
    module.eval()
    return module


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}
    if dtype not in table:
        raise ValueError(f"unknown dtype '{dtype}'; expected one of {sorted(table)}")
    return table[dtype]


def load_state_dict_file(component: str, path: str) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` weight file, or raise :class:`MissingWeightsError`."""
    p = Path(os.path.expanduser(path))
    if not p.is_file():
        raise MissingWeightsError(
            f"Missing weights for {component}: no file at '{path}'. Download the file and point the config at it."
        )
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    state = torch.load(str(p), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def from_hf(
    component: str,
    cls: type,
    source: Source,
    config_cls: type | None = None,
    dtype: torch.dtype | None = None,
    yaml_key: str | None = None,
    **load_kwargs: Any,
) -> Any:
    """Load a diffusers ``ModelMixin`` or a transformers ``PreTrainedModel`` subclass ``cls`` from ``source``.

    With ``source.config`` the model is built with random weights: diffusers models via ``cls.from_config``,
    transformers models via ``cls(config_cls(**config))``.
    """

    def load(path: str, src: Source, local_only: bool) -> Any:
        kwargs: dict[str, Any] = dict(local_files_only=local_only, **load_kwargs)
        if src.subfolder:
            kwargs["subfolder"] = src.subfolder
        if src.revision:
            kwargs["revision"] = src.revision
        if dtype is not None:
            kwargs["torch_dtype"] = dtype
        return cls.from_pretrained(path, **kwargs)

    def build(config: dict[str, Any]) -> Any:
        if config_cls is not None:
            model = cls(config_cls(**config))
        else:
            model = cls.from_config(config)
        return model.to(dtype) if dtype is not None else model

    return load_or_build(component, source, load, build, yaml_key)


def require_file(component: str, path: str) -> str:
    """Return ``path`` (``~`` expanded) if it is a file, else raise :class:`MissingWeightsError` naming ``component``."""
    p = Path(os.path.expanduser(path))
    if not p.is_file():
        raise MissingWeightsError(
            f"Missing weights for {component}: no file at '{path}'. Train it first (the demo chain writes it under "
            "runs/<run>/export/) or point the config at an exported file."
        )
    return str(p)


def missing_weights_cause(err: BaseException | None) -> MissingWeightsError | None:
    """The MissingWeightsError behind ``err``: jsonargparse re-raises errors of nested class instantiation as
    ``ValueError: Does not validate against any of the Union subtypes`` (the original stays in the chain)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, MissingWeightsError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
