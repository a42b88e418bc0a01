"""Dependencies point one way: the plain-torch layers (models/, losses/, evaluation/, datamodules/degradation/)
never import Lightning or a layer above them. Walks every ``import`` / ``from`` statement (function-level ones
included) with ``ast``, so nothing is imported to check."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLAIN_TORCH = ("models", "losses", "evaluation", "datamodules/degradation")
FORBIDDEN = ("lightning", "pytorch_lightning", "datamodules", "lightning_modules", "callbacks", "plugins", "onestep_sr",
             "main")
ALLOWED = {"datamodules/degradation": ("datamodules.degradation",)}  # a package may import itself


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, the code of ``module``; relative imports are
    resolved against it, and ``from pkg import name`` also yields ``pkg.name`` (it may be a submodule)."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return found


def violations(layer: str) -> list[str]:
    allowed = ALLOWED.get(layer, ())
    bad = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for line, name in imported_modules(path.read_text(), module_name(path), path.name == "__init__.py"):
            forbidden = any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
            if forbidden and not any(name == a or name.startswith(a + ".") for a in allowed):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return bad


@pytest.mark.parametrize("layer", PLAIN_TORCH)
def test_plain_torch_layers_import_nothing_above_them(layer: str) -> None:
    assert (ROOT / layer).is_dir()
    assert violations(layer) == []


def test_the_walk_sees_every_kind_of_import() -> None:
    """Top-level, function-level, ``from`` and relative imports are all found."""
    source = ("import os\nfrom lightning.pytorch import Trainer\n\ndef f():\n    import datamodules.datasets\n"
              "    from main import cli\n    return 1\n")
    names = {name for _, name in imported_modules(source, "models.plant")}
    assert {"os", "lightning.pytorch", "datamodules.datasets", "main", "main.cli"} <= names
    names = {name for _, name in imported_modules("from ..datamodule import SRDataModule\nfrom . import ops\n",
                                                 "datamodules.degradation.plant")}
    assert {"datamodules.datamodule", "datamodules.degradation", "datamodules.degradation.ops"} <= names
    names = {name for _, name in imported_modules("from .ops import resize\n", "datamodules.degradation",
                                                 is_package=True)}
    assert names == {"datamodules.degradation.ops", "datamodules.degradation.ops.resize"}
