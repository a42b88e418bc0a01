"""bicubic_upsample: the LQ at the target size, bicubic (align_corners=False) and clamped to [0, 1]."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.resize import bicubic_upsample


def test_equals_bicubic_interpolation_clamped() -> None:
    torch.manual_seed(0)
    lq = torch.rand(2, 3, 5, 7)
    lq[0, 0, 2, 3] = 1.0  # a bright pixel next to dark ones: bicubic overshoots above 1 around it
    lq[0, 0, 2, 2] = 0.0
    raw = F.interpolate(lq, scale_factor=4, mode="bicubic", align_corners=False)
    assert raw.max() > 1 or raw.min() < 0  # the clamp matters
    up = bicubic_upsample(lq, 4)
    assert up.shape == (2, 3, 20, 28) and torch.equal(up, raw.clamp(0, 1))
    sized = bicubic_upsample(lq, (11, 9))
    ref = F.interpolate(lq, size=(11, 9), mode="bicubic", align_corners=False).clamp(0, 1)
    assert sized.shape == (2, 3, 11, 9) and torch.equal(sized, ref)
    assert torch.equal(bicubic_upsample(lq, torch.Size([20, 28])), bicubic_upsample(lq, (20, 28)))


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_integer_factor_and_target_size_agree(scale: int) -> None:
    lq = torch.rand(1, 3, 6, 10, generator=torch.Generator().manual_seed(scale))
    torch.testing.assert_close(bicubic_upsample(lq, scale), bicubic_upsample(lq, (6 * scale, 10 * scale)),
                               atol=1e-6, rtol=0)
