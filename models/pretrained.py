"""Build any pretrained component one way: from a hub id, a local path, or an architecture config.

Every network that could carry pretrained weights (VAE, UNet, DiT, DINOv3, ConvNeXt, VLM, VGG) is described in
YAML by a :class:`Source` holding *exactly one* of

- ``pretrained``: a Hugging Face hub id (read from the local hub cache; offline unless ``HF_HUB_OFFLINE=0``)
  or a local directory / file;
- ``config``: an architecture config (a dict of constructor arguments); the network is built with random
  weights. Tests and the demo use this with tiny configs, so they build the *same classes* as real runs.

A missing weight never surfaces as a stack trace from deep inside a library: :func:`load_or_build` turns it into
one :class:`MissingWeightsError` naming the component, what was tried and how to provide it. Before anything is
built, the command line lists *every* missing component of a config at once: it finds the :class:`Source` entries
of the config and the constructor arguments that classes declare as weights with :func:`declare_weights`, and
checks them offline (:func:`hub_cached`, local paths).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from models.errors import UserError, user_error_cause

T = TypeVar("T")

__all__ = [
    "MissingWeightsError",
    "Source",
    "WeightArg",
    "WeightFileError",
    "declare_weights",
    "declared_weights",
    "hub_cached",
    "hub_command",
    "hub_offline",
    "load_or_build",
    "freeze",
    "resolve_dtype",
]

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


class MissingWeightsError(UserError, RuntimeError):
    """A pretrained component could not be found locally. The message says what and how to fix it."""


class WeightFileError(UserError, ValueError):
    """A weight file exists but cannot be read (truncated, not a safetensors/torch file). The message names it."""


@dataclass
class Source:
    """Where a component comes from: ``pretrained`` (hub id or local path) *or* ``config`` (random init).

    Args:
        pretrained: hub id (``org/name``) or a local directory / file.
        subfolder: subfolder inside a diffusers-style repository (``unet``, ``vae``, ...).
        config: architecture config for random initialisation (tests, demo, benchmarks).
        revision: optional hub revision.
        extra: reserved, read by no loader; saved run configs carry it as ``{}``.
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


def looks_like_hub_id(name: str) -> bool:
    """``org/name`` and not a path: no leading ``.``, ``/`` or ``~``, and no weight-file suffix
    (``weights/vgg16-397923af.pth`` is a local file)."""
    return (name.count("/") == 1 and not name.startswith((".", "/", "~"))
            and not name.lower().endswith(WEIGHT_SUFFIXES))


_looks_like_hub_id = looks_like_hub_id


def hub_command(*args: str) -> str:
    """The command of the installed Hugging Face hub client: ``hf <args>`` (huggingface_hub 0.34 and later ship
    ``hf``), else the older ``huggingface-cli <args>``. ``hub_command("download", id)``, ``hub_command("login")``
    (``hf auth login``)."""
    try:
        has_hf = importlib.util.find_spec("huggingface_hub.cli.hf") is not None
    except ImportError:  # huggingface_hub without a cli package
        has_hf = False
    if has_hf:
        args = ("auth", "login") if args == ("login",) else args
        return " ".join(("hf", *args))
    return " ".join(("huggingface-cli", *args))


def hub_cache_dir() -> Path:
    """The hub cache this process reads, from the environment at call time (``HF_HUB_CACHE``, else
    ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expanduser(os.environ["HF_HUB_CACHE"]))
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(os.path.expanduser(home)) / "hub"


def hub_cached(repo_id: str, subfolder: str | None = None, revision: str | None = None) -> bool:
    """Whether the local hub cache holds a snapshot of ``repo_id`` (``revision``, default ``main``) with a
    non-empty ``subfolder`` (or any file without one). Reads the cache folder only: never the network."""
    from huggingface_hub import snapshot_download

    try:
        root = Path(snapshot_download(repo_id, revision=revision, cache_dir=hub_cache_dir(), local_files_only=True))
    except Exception:  # noqa: BLE001 - LocalEntryNotFoundError, a malformed id or cache: not there
        return False
    folder = root / subfolder if subfolder else root
    return folder.is_dir() and any(folder.iterdir())


# ------------------------------------------------------------------ what is a weight: declared next to the classes
@dataclass(frozen=True)
class WeightArg:
    """A constructor argument that names weights, as its class declares it (:func:`declare_weights`).

    Args:
        component: what it is, for messages (``"VGG16 ImageNet weights (DISTS)"``).
        how: a shell command that provides a missing one; ``{path}`` stands for the configured path.
        file: the argument is a file path (``str``); otherwise it is a :class:`Source`.
    """

    component: str
    how: str | None = None
    file: bool = False


_DECLARED: dict[type, dict[str, WeightArg]] = {}


def declare_weights(**args: WeightArg) -> Callable[[type[T]], type[T]]:
    """Class decorator: the constructor arguments of the class that hold weights (a :class:`Source` or a file).

    The command line checks them, with every other :class:`Source` of a config, before anything is built::

        @declare_weights(alpha_beta=WeightArg("DISTS alpha/beta", how="curl -L -o {path} <url>", file=True))
        class DISTS(nn.Module): ...
    """

    def register(cls: type[T]) -> type[T]:
        _DECLARED[cls] = dict(args)
        return cls

    return register


def declared_weights(cls: type) -> dict[str, WeightArg]:
    """The weight arguments ``cls`` and its base classes declare (a subclass's declaration wins)."""
    out: dict[str, WeightArg] = {}
    for klass in reversed(getattr(cls, "__mro__", ())):
        out.update(_DECLARED.get(klass, {}))
    return out


def _how_to_provide(component: str, source: Source, yaml_key: str | None) -> str:
    key = yaml_key or "<component>.pretrained"
    lines = []
    if source.pretrained and _looks_like_hub_id(source.pretrained):
        lines.append(
            f"  - on a machine with network: `{hub_command('download', source.pretrained)}` "
            f"(gated repositories need `{hub_command('login')}` and accepted terms), then copy the hub cache "
            "(~/.cache/huggingface/hub or $HF_HOME/hub) here; or"
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


def check_weight_file(component: str, path: str | os.PathLike) -> None:
    """Raise :class:`WeightFileError` naming ``path`` if a ``.safetensors`` file's header cannot be read (truncated,
    empty, not safetensors). Other formats are read by their loaders."""
    p = Path(path)
    if p.suffix != ".safetensors":
        return
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt") as handle:
            handle.keys()
    except Exception as err:  # noqa: BLE001 - SafetensorError, OSError: the file is unusable either way
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightFileError(
            f"{component}: '{path}' is not a readable safetensors file ({reason}); export it again or point the "
            "config at another file"
        ) from None


def require_file(component: str, path: str) -> str:
    """Return ``path`` (``~`` expanded) if it is a readable file, else raise :class:`MissingWeightsError` (no
    file) or :class:`WeightFileError` (unreadable) naming ``component``."""
    p = Path(os.path.expanduser(path))
    if not p.is_file():
        raise MissingWeightsError(
            f"Missing weights for {component}: no file at '{path}'. Train it first (each training run writes it "
            "under runs/<run>/version_<N>/export/) or point the config at an exported file."
        )
    check_weight_file(component, p)
    return str(p)


def missing_weights_cause(err: BaseException | None) -> MissingWeightsError | None:
    """The MissingWeightsError behind ``err`` (see :func:`models.errors.user_error_cause`)."""
    found = user_error_cause(err)
    return found if isinstance(found, MissingWeightsError) else None
