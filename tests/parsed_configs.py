"""The repository's configs, each parsed once per test session.

Parsing one composed config through the project's LightningCLI parser takes about half a second on the CI machine
(jsonargparse resolves every class path and fills every default), and the config, recipe, data and module tests
read the same run files again and again. :func:`load_config` here is :func:`onestep_sr.config.load_config` with
a memory: the same call (same files, extra arguments and subcommand) parses once and every caller gets its own
deep copy, so a test that edits its dict changes nothing for the next one.

Use it for the files under ``configs/`` only, which no test writes. A test of the parsing itself, or one that
writes its own config files, calls :func:`onestep_sr.config.load_config` directly.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Sequence
from typing import Any

from onestep_sr import config as _config

__all__ = ["load_config"]


@functools.cache
def _parsed(configs: tuple[str, ...], args: tuple[str, ...], subcommand: str | None) -> dict[str, Any]:
    return _config.load_config(*configs, args=args, subcommand=subcommand)


def load_config(*configs: str | os.PathLike, args: Sequence[str] = (), subcommand: str | None = None) -> dict[str, Any]:
    """:func:`onestep_sr.config.load_config`, parsed once per distinct call; a deep copy of the result."""
    key = tuple(os.path.abspath(os.fspath(c)) for c in configs)
    return copy.deepcopy(_parsed(key, tuple(args), subcommand))
