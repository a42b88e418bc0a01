"""Test-wide settings and the frozen networks that many test modules share.

Tiny models on a small CPU box run fastest on one thread (thread start-up dominates), so the default run spreads
the test files over one worker process per core instead (pytest-xdist, ``-n auto --dist loadfile`` in
``pyproject.toml``; :func:`pytest_xdist_auto_num_workers` below picks the number). The perceptual losses are frozen
and hold no state that training changes, so one instance per session serves every module that trains with them;
they use a 1/8-width random VGG (``config={"width": 0.125}``, see ``losses/vgg.py``), the same code as the real
trunk at a fraction of the cost. Tests of the real trunk's layout build their own. The demo chains' exported
adapters are written once per session too (``demo_exports``)."""

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from losses.dists import DISTS
from losses.fdl import FDL
from losses.lpips import LPIPS
from models.pretrained import Source

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

NARROW_VGG = {"width": 0.125}
MAX_WORKERS = 4  # each worker imports torch, diffusers, transformers and Lightning (about 1 GB)
DEMO_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "demo"
# The demo chains' exports, where the demo predict configs look for them by default (relative to the working folder),
# written from the generator of the demo training config named first (random init, its seed).
DEMO_EXPORTS = {
    "stage1.yaml": ["runs/demo_stage1/version_0/export/stage1.safetensors",
                    "runs/demo_stage2/version_0/export/stage2.safetensors"],
    "strsr_flux2.yaml": ["runs/demo_strsr_flux2/version_0/export/strsr.safetensors",
                         "runs/demo_strsr_stage2_flux2/version_0/export/stage2.safetensors"],
}


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """Workers for ``-n auto``: one per core (at most ``MAX_WORKERS``), except none (every test in this process)
    where workers cost more than they save or get in the way: the slow set (``-m slow``: its tests start their own
    processes, two ranks each for DDP / FSDP), a run of one test file (workers take whole files), or a single
    core. ``PYTEST_XDIST_AUTO_NUM_WORKERS`` and an explicit ``-n N`` still decide; ``--pdb`` runs here."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # pytest-xdist reads it
    marks = " ".join((config.option.markexpr or "").split())
    if "slow" in marks and "not slow" not in marks:
        return 0
    paths = {Path(str(arg).split("::")[0]) for arg in config.args}
    files = {f for path in paths for f in (path.rglob("test_*.py") if path.is_dir() else [path])}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(cores, MAX_WORKERS, len(files))
    return workers if workers >= 2 else 0


@pytest.fixture(scope="session")
def narrow_dists() -> DISTS:
    """DISTS on a narrow random VGG16 (seed 0), for the TUDSR modules' EA-DISTS term."""
    with torch.random.fork_rng():  # the global stream of the test that first asks for it stays as it was
        torch.manual_seed(0)
        return DISTS(vgg=Source(config=NARROW_VGG))


@pytest.fixture(scope="session")
def narrow_perceptual() -> dict[str, torch.nn.Module]:
    """StrSR's LPIPS and FDL (16 projections) on narrow random VGG16 / VGG19 (seed 0)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return {"lpips": LPIPS(vgg=Source(config=NARROW_VGG)),
                "fdl": FDL(vgg=Source(config=NARROW_VGG), num_projections=16)}


@pytest.fixture(scope="session")
def _demo_export_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from onestep_sr.cli import cli_main

    folder = tmp_path_factory.mktemp("demo_exports")
    with torch.random.fork_rng(), pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)  # the configs' relative paths (runs/...) resolve here; nothing is written by building
        for config, files in DEMO_EXPORTS.items():
            generator = cli_main(["--config", str(DEMO_CONFIGS / config)], run=False).model.generator
            for file in files:
                generator.export_adapter(folder / file)  # DiT generators write the adaptive MLP beside it
    return folder


@pytest.fixture(scope="session")
def demo_exports(_demo_export_folder: Path) -> Callable[[Path], Path]:
    """``demo_exports(folder)`` copies the demo chains' exported adapters (``DEMO_EXPORTS``, built once per session)
    into ``folder``, so that the demo predict configs find them when run from there; returns ``folder``."""

    def copy_into(folder: Path) -> Path:
        shutil.copytree(_demo_export_folder, folder, dirs_exist_ok=True)
        return folder

    return copy_into
