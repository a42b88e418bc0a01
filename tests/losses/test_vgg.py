"""VGG trunks of the perceptual losses: the real torchvision layout, and the narrow (``width``) test trunk that
DISTS, LPIPS and FDL accept."""

from __future__ import annotations

import os

import lpips as lpips_pkg
import pytest
import torch
import torch.nn.functional as F
from torchvision.models.vgg import cfgs, make_layers

from losses.dists import DISTS
from losses.fdl import FDL, FDL_CHANNELS
from losses.lpips import LPIPS
from losses.vgg import build_vgg_features, split_stages, stage_channels
from models.pretrained import Source

NARROW = {"width": 0.125}
NARROW_CHANNELS = (8, 16, 32, 64, 64)  # 64, 128, 256, 512, 512 / 8


@pytest.mark.parametrize(("arch", "cfg"), [("vgg16", "D"), ("vgg19", "E")])
def test_real_trunk_is_torchvisions(arch: str, cfg: str) -> None:
    features = build_vgg_features(Source(config={}), arch)
    expected = make_layers(cfgs[cfg]).state_dict()  # torchvision's own builder
    assert {k: v.shape for k, v in features.state_dict().items()} == {k: v.shape for k, v in expected.items()}
    assert stage_channels(features) == (64, 128, 256, 512, 512) == FDL_CHANNELS
    assert not any(p.requires_grad for p in features.parameters())


@pytest.mark.parametrize(("arch", "cfg"), [("vgg16", "D"), ("vgg19", "E")])
def test_narrow_trunk_keeps_layer_names(arch: str, cfg: str) -> None:
    features = build_vgg_features(Source(config=NARROW), arch)
    real = make_layers(cfgs[cfg]).state_dict()
    narrow = features.state_dict()
    assert narrow.keys() == real.keys()  # the torchvision indices, so stage cuts and lpips slices still apply
    for key, value in real.items():  # every conv 1/8 as wide (the RGB input stays 3 channels)
        want = [value.shape[0] // 8] + ([3 if value.shape[1] == 3 else value.shape[1] // 8] if value.dim() > 1 else [])
        assert list(narrow[key].shape[:2]) == want, key
    assert stage_channels(features) == NARROW_CHANNELS
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        outs = [x]
        for stage in split_stages(features):
            outs.append(stage(outs[-1]))
    assert [o.shape[1] for o in outs[1:]] == list(NARROW_CHANNELS)


def test_bad_vgg_config_is_clear() -> None:
    with pytest.raises(ValueError, match="only 'width'"):
        build_vgg_features(Source(config={"depth": 3}), "vgg16")
    with pytest.raises(ValueError, match=r"width must be in \(0, 1\]"):
        build_vgg_features(Source(config={"width": 2.0}), "vgg16")


def test_narrow_dists_and_fdl() -> None:
    torch.manual_seed(0)
    dists = DISTS(Source(config=NARROW))
    assert dists.alpha.numel() == dists.beta.numel() == 3 + sum(NARROW_CHANNELS)  # one weight per channel
    fdl = FDL(Source(config=NARROW), num_projections=4)
    assert [fdl.projections(i).shape[1] for i in range(5)] == list(NARROW_CHANNELS)
    x, y = torch.rand(2, 3, 80, 80), torch.rand(2, 3, 80, 80)
    for loss in (dists, fdl):
        assert loss(x, x.clone()).abs().item() < 1e-6
        assert (loss(x, y, reduction="none") > 0).all()
    with pytest.raises(ValueError, match="real VGG16 trunk"):  # the official alpha/beta fit 1475 channels only
        DISTS(Source(config=NARROW), alpha_beta=os.devnull)


def test_narrow_lpips_hand_value() -> None:
    """Zhang et al. eq. 1 by hand on the narrow trunk: the linear layers keep the shipped weights of the first
    channels of each layer."""
    torch.manual_seed(0)
    features = build_vgg_features(Source(config=NARROW), "vgg16")  # the same seed: the same random trunk
    torch.manual_seed(0)
    loss = LPIPS(Source(config=NARROW))
    shipped = torch.load(os.path.join(os.path.dirname(lpips_pkg.__file__), "weights/v0.1/vgg.pth"), map_location="cpu")
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def feats(img: torch.Tensor) -> list[torch.Tensor]:
        h, out = ((2 * img - 1) - shift) / scale, []
        for i in range(30):
            h = features[i](h.clone())
            if i in (3, 8, 15, 22, 29):  # relu1_2 ... relu5_3
                out.append(h / (h.square().sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return out

    with torch.no_grad():
        expected = torch.zeros(2)
        for k, (fx, fy) in enumerate(zip(feats(x), feats(y))):
            w = shipped[f"lin{k}.model.1.weight"][:, : NARROW_CHANNELS[k]]  # (1, C_k, 1, 1)
            expected += F.conv2d((fx - fy).square(), w).mean(dim=(1, 2, 3))
        got = loss(x, y, reduction="none")
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert loss(x, x.clone()).item() == 0.0
