"""Every weight a config needs, checked before anything is built, reported in one message.

A run of a real config without its weights used to stop at the first missing one, and the next try at the next
(SD2.1, then DINOv3, then VGG16, then DISTS). :func:`check_weights` walks the resolved config instead and finds

- every :class:`models.pretrained.Source`-shaped entry (a mapping with a ``pretrained`` hub id or local path), and
- every constructor argument that its class declares as a weight file with :func:`models.pretrained.declare_weights`
  (exported adapters, the DISTS alpha/beta file, a text-embedding file),

checks them offline (hub ids in the local hub cache, unless downloads are allowed with ``HF_HUB_OFFLINE=0``;
paths on disk), and raises one :class:`models.pretrained.MissingWeightsError` that lists each missing one with its
id or path, the config keys that name it and the command that provides it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from models.pretrained import (MissingWeightsError, WeightArg, declared_weights, hub_cache_dir, hub_cached,
                               hub_command, hub_offline, looks_like_hub_id)

__all__ = ["Requirement", "check_weights", "find_requirements", "missing_message", "missing_requirements"]

SOURCE_KEYS = {"pretrained", "subfolder", "config", "revision", "extra"}


@dataclass
class Requirement:
    """One weight a config names: a hub repository (``subfolders`` of it) or a local path."""

    target: str                      # hub id or local path, as configured
    hub: bool                        # hub id (else a local path)
    component: str                   # what it is, e.g. "OneStepSDGenerator.unet" or a declared name
    keys: list[str] = field(default_factory=list)  # config keys naming it
    subfolders: list[str] = field(default_factory=list)
    revision: str | None = None
    how: str | None = None           # declared command, "{path}" filled in


def _class(class_path: Any) -> type | None:
    if not isinstance(class_path, str) or "." not in class_path:
        return None
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name, None)
    except Exception:  # noqa: BLE001 - jsonargparse has resolved it already; a failure here only loses names
        return None


def _is_source(node: Any) -> bool:
    return isinstance(node, dict) and "pretrained" in node and set(node) <= SOURCE_KEYS


def _walk(node: Any, key: str, owner: type | None, arg: str | None) -> Iterator[tuple[str, Any, WeightArg | None,
                                                                                      type | None, str | None]]:
    """Yield (key, value, declaration, owner class, argument) for every Source entry and declared weight file."""
    if isinstance(node, dict) and "class_path" in node:
        cls = _class(node["class_path"])
        declared = declared_weights(cls) if cls is not None else {}
        for name, value in (node.get("init_args") or {}).items():
            sub = f"{key}.init_args.{name}"
            weight = declared.get(name)
            if weight is not None and weight.file:
                if isinstance(value, str):
                    yield sub, value, weight, cls, name
            elif _is_source(value):
                yield sub, value, weight, cls, name
            else:
                yield from _walk(value, sub, cls, name)
    elif _is_source(node):
        yield key, node, None, owner, arg
    elif isinstance(node, dict):
        for name, value in node.items():
            yield from _walk(value, f"{key}.{name}" if key else str(name), owner, str(name))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{key}.{index}", owner, arg)


def find_requirements(config: dict[str, Any]) -> list[Requirement]:
    """The weights ``config`` (a resolved config as a dict, e.g. :func:`onestep_sr.config.load_config`) needs, one
    :class:`Requirement` per hub repository (revision) or local path, in config order."""
    found: dict[tuple[str, str | None], Requirement] = {}
    for key, value, weight, owner, arg in _walk(config, "", None, None):
        if isinstance(value, dict):  # a Source
            target, subfolder, revision = value.get("pretrained"), value.get("subfolder"), value.get("revision")
            if not isinstance(target, str) or not target:
                continue  # config: random init, nothing to load
            key = f"{key}.pretrained"
        else:
            target, subfolder, revision = value, None, None
        local = Path(os.path.expanduser(target))
        hub = looks_like_hub_id(target) and not local.exists() and not (weight is not None and weight.file)
        component = weight.component if weight is not None else (
            f"{owner.__name__}.{arg}" if owner is not None and arg is not None else key)
        entry = found.setdefault((target, revision if hub else None), Requirement(
            target=target, hub=hub, component=component, revision=revision if hub else None,
            how=weight.how.format(path=target) if weight is not None and weight.how else None))
        entry.keys.append(key)
        if subfolder and subfolder not in entry.subfolders:
            entry.subfolders.append(subfolder)
    return list(found.values())


def missing_requirements(requirements: list[Requirement]) -> list[Requirement]:
    """The requirements that are not here: local paths that do not exist; hub ids (subfolders) not in the local hub
    cache, when downloads are off (``HF_HUB_OFFLINE`` unset or 1). Reads nothing from the network."""
    missing = []
    for req in requirements:
        if req.hub:
            if not hub_offline():
                continue
            absent = [sub for sub in req.subfolders or [None] if not hub_cached(req.target, sub, req.revision)]
            if absent:
                missing.append(replace(req, subfolders=[sub for sub in absent if sub is not None]))
        elif not Path(os.path.expanduser(req.target)).exists():
            missing.append(req)
    return missing


def _keys(keys: list[str]) -> str:
    """``a.b.{c,d}.e`` for keys that share a dotted prefix and suffix."""
    if len(keys) == 1:
        return keys[0]
    parts = [k.split(".") for k in keys]
    shortest = min(len(p) for p in parts)
    head = 0
    while head < shortest - 1 and len({p[head] for p in parts}) == 1:
        head += 1
    tail = 0
    while tail < shortest - head - 1 and len({p[-1 - tail] for p in parts}) == 1:
        tail += 1
    middle = ",".join(".".join(p[head:len(p) - tail]) for p in parts)
    return ".".join([*parts[0][:head], f"{{{middle}}}", *(parts[0][len(parts[0]) - tail:] if tail else [])])


def missing_message(missing: list[Requirement]) -> str:
    """One message for all missing weights: each with its id or path, config keys and providing command."""
    online = not hub_offline()
    lines = [f"{len(missing)} pretrained component(s) of this config are missing (nothing was built; hub cache "
             f"'{hub_cache_dir()}', {'downloads allowed' if online else 'offline'}; relative paths are read from "
             f"'{os.getcwd()}'):"]
    for req in missing:
        if req.hub:
            parts = f" ({', '.join(req.subfolders)})" if req.subfolders else ""
            revision = f" at revision '{req.revision}'" if req.revision else ""
            how = hub_command("download", req.target) + (f" --revision {req.revision}" if req.revision else "")
            lines.append(f"  - hub id {req.target}{parts}{revision}: not in the hub cache")
        else:
            how = req.how or f"put the file or folder at '{req.target}'"
            lines.append(f"  - {req.component}: no file or folder at '{req.target}'")
        lines.append(f"      config: {_keys(req.keys)}")
        lines.append(f"      provide: {how}")
    lines.append(
        "Run the commands on a machine with network (gated repositories, e.g. DINOv3, need "
        f"`{hub_command('login')}` and the licence accepted on the model page), then copy the hub cache here; or "
        "allow downloads on this machine with HF_HUB_OFFLINE=0; or point the config keys at local folders or files.")
    return "\n".join(lines)


def check_weights(config: dict[str, Any]) -> None:
    """Raise one :class:`MissingWeightsError` listing every weight ``config`` needs that is not here."""
    missing = missing_requirements(find_requirements(config))
    if missing:
        raise MissingWeightsError(missing_message(missing))
