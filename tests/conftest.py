"""Test-wide settings and the frozen networks that many test modules share.

Tiny models on a small CPU box run fastest on one thread (thread start-up dominates). The perceptual losses are
frozen and hold no state that training changes, so one instance per session serves every module that trains with
them; they use a 1/8-width random VGG (``config={"width": 0.125}``, see ``losses/vgg.py``), the same code as the
real trunk at a fraction of the cost. Tests of the real trunk's layout build their own.
"""

import os

import pytest
import torch

from losses.dists import DISTS
from losses.fdl import FDL
from losses.lpips import LPIPS
from models.pretrained import Source

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

NARROW_VGG = {"width": 0.125}


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
