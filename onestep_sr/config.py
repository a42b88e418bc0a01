"""Composed configs: a config file may start from other config files.

A file's top-level ``compose: [a.yaml, b.yaml]`` (paths relative to that file) stands for the listed files, each
expanded the same way, in order, followed by the file's own remaining keys. On the command line this becomes
LightningCLI's repeated ``--config``, so jsonargparse's own merge rules apply (nested keys merge, a list replaces a
list of another length, a new ``class_path`` drops the old ``init_args``)::

    python main.py fit --config configs/stage1.yaml
    # is parsed as
    python main.py fit --config configs/trainer/fit.yaml --config configs/method/tudsr_stage1.yaml ... \
        --config '<the own keys of configs/stage1.yaml>'

The own keys travel as a YAML string. jsonargparse reads a string relative to the working directory, so a relative
path to a config file (``.yaml``, ``.yml``, ``.json``) among the own keys that names a file next to the composing
file is made absolute first: it means what it would mean written in that file. Files without ``compose`` are passed
through unchanged (jsonargparse reads them itself, relative paths included).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from models.errors import UserError

__all__ = ["COMPOSE_KEY", "ComposeError", "expand_args", "expand_config", "load_config"]

COMPOSE_KEY = "compose"
CONFIG_FLAGS = ("--config", "-c")  # LightningCLI's config option and its short form
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


class ComposeError(UserError, ValueError):
    """A ``compose`` entry that is missing, malformed or part of a cycle (the message names the file and entry)."""


def _own_keys(path: str, text: str) -> str | None:
    """The YAML text of ``path`` without its ``compose`` key (None if nothing else is left), relative paths to
    config files next to ``path`` made absolute. Works on YAML nodes, so scalars keep their spelling."""
    root = yaml.compose(text)
    assert isinstance(root, yaml.MappingNode)
    root.value = [(k, v) for k, v in root.value if not (isinstance(k, yaml.ScalarNode) and k.value == COMPOSE_KEY)]
    if not root.value:
        return None
    folder = os.path.dirname(path)
    stack: list[yaml.Node] = [v for _, v in root.value]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            stack += [v for _, v in node.value]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value
        elif (node.tag == "tag:yaml.org,2002:str" and node.value.endswith(CONFIG_SUFFIXES)
              and not os.path.isabs(node.value) and os.path.isfile(os.path.join(folder, node.value))):
            node.value = os.path.abspath(os.path.join(folder, node.value))
    return yaml.serialize(root)


def expand_config(path: str | os.PathLike, _chain: tuple[str, ...] = ()) -> list[str]:
    """The ``--config`` values that stand for ``path``: its composed files (recursively, in order), then its own
    keys as a YAML string. A value that is not a file with a ``compose`` key is returned unchanged."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        return [path]  # a YAML string, or a missing file jsonargparse reports itself
    text = Path(path).read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return [path]  # jsonargparse reports the syntax error with its own loader
    if not isinstance(data, dict) or COMPOSE_KEY not in data:
        return [path]
    entries = data[COMPOSE_KEY]
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise ComposeError(f"{path}: '{COMPOSE_KEY}' must be a list of config file paths, got {entries!r}")
    chain = (*_chain, os.path.realpath(path))
    values: list[str] = []
    for entry in entries:
        target = os.path.normpath(os.path.join(os.path.dirname(path), os.path.expanduser(entry)))
        if not os.path.isfile(target):
            raise ComposeError(f"{path}: compose entry '{entry}' not found (looked for {os.path.abspath(target)})")
        if os.path.realpath(target) in chain:
            cycle = " -> ".join([*chain[chain.index(os.path.realpath(target)):], os.path.realpath(target)])
            raise ComposeError(f"{path}: compose entry '{entry}' forms a cycle: {cycle}")
        values += expand_config(target, chain)
    own = _own_keys(path, text)
    return values + ([own] if own is not None else [])


def expand_args(args: Sequence[str]) -> list[str]:
    """Command-line arguments with every ``--config X``, ``--config=X`` and ``-c X`` expanded (see module doc)."""
    args, out, i = list(args), [], 0
    while i < len(args):
        arg = args[i]
        if arg in CONFIG_FLAGS and i + 1 < len(args):
            out += [part for value in expand_config(args[i + 1]) for part in (arg, value)]
            i += 2
            continue
        if arg.startswith("--config="):
            out += [f"--config={value}" for value in expand_config(arg.split("=", 1)[1])]
        else:
            out.append(arg)
        i += 1
    return out


def load_config(*configs: str | os.PathLike, args: Sequence[str] = (), subcommand: str | None = None) -> dict[str, Any]:
    """The fully merged config of ``configs`` (each expanded, in order, then the extra command-line ``args``) as a
    plain dict, exactly what ``main.py [subcommand] --config ... --print_config`` prints: defaults filled in, nothing
    instantiated. Parsed by the project's LightningCLI parser, so jsonargparse's merge rules apply. Pass the
    ``subcommand`` to read a config saved by a run (it holds that subcommand's options, e.g. ``ckpt_path``)."""
    from onestep_sr.cli import parse_config

    argv = [part for config in configs for part in ("--config", os.fspath(config))] + list(args)
    return parse_config(argv, subcommand)
