"""The degradation's random stream is saved in checkpoints and continues after a resume."""

import pytest
import torch

from datamodules import SRDataModule
from datamodules.degradation import RealESRGANDegradation


def _draws(dm: SRDataModule, n: int = 5) -> torch.Tensor:
    return torch.rand(n, generator=dm.degradation.generator)


def test_state_dict_continues_the_degradation_stream():
    dm = SRDataModule(degradation=RealESRGANDegradation(preset="light", seed=3))
    _draws(dm)  # the run so far
    state = dm.state_dict()
    expected = _draws(dm)  # what the uninterrupted run draws next

    resumed = SRDataModule(degradation=RealESRGANDegradation(preset="light", seed=3))
    fresh = _draws(resumed)
    resumed.load_state_dict(state)
    assert torch.equal(_draws(resumed), expected)
    assert not torch.equal(fresh, expected)  # without the state a resumed run would replay its first draws


def test_a_different_world_size_reseeds_distinct_streams(monkeypatch):
    dm = SRDataModule(degradation=RealESRGANDegradation(preset="light", seed=3))
    state = dm.state_dict()  # saved by one rank
    streams = []
    for rank in (0, 1, 2):
        other = SRDataModule(degradation=RealESRGANDegradation(preset="light", seed=3))
        monkeypatch.setattr(other, "_rank_and_world", lambda rank=rank: (rank, 3))
        with pytest.warns(UserWarning, match="reseeding"):
            other.load_state_dict(state)
        streams.append(_draws(other))
    assert not torch.equal(streams[0], streams[1]) and not torch.equal(streams[1], streams[2])
