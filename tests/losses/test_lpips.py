"""LPIPS-VGG: offline construction, the VGG16 transplant and the value against a hand computation."""

from __future__ import annotations

import os

import lpips as lpips_pkg
import pytest
import torch
import torch.nn.functional as F
from torchvision.models.vgg import cfgs, make_layers

from losses.lpips import LPIPS
from models.pretrained import MissingWeightsError, Source

RELU_INDICES = (3, 8, 15, 22, 29)  # relu1_2 ... relu5_3 in torchvision's vgg16.features


def test_random_trunk_offline_identity_and_eval() -> None:
    torch.manual_seed(0)
    loss = LPIPS(None)
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    assert loss(x, x.clone()).item() == 0.0
    d = loss(x, y, reduction="none")
    assert d.shape == (2,) and (d > 0).all()
    loss.train()  # must stay in eval: the package's Dropout would otherwise change the value
    assert not any(m.training for m in loss.modules())
    torch.testing.assert_close(loss(x, y, reduction="none"), d)
    assert sum(p.requires_grad for p in loss.parameters()) == 0
    shipped = torch.load(os.path.join(os.path.dirname(lpips_pkg.__file__), "weights/v0.1/vgg.pth"), map_location="cpu")
    torch.testing.assert_close(loss.net.lin0.model[1].weight, shipped["lin0.model.1.weight"])


def test_vgg_file_transplant_and_hand_value(tmp_path) -> None:
    torch.manual_seed(1)
    features = make_layers(cfgs["D"]).eval()
    path = tmp_path / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    loss = LPIPS(Source(pretrained=str(path)))
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    y = torch.rand(2, 3, 32, 32)
    got = loss(x, y, reduction="none")

    # Zhang et al. eq. 1 by hand: scaling layer, unit-normalised features, 1x1 linear weights, spatial mean, sum.
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    shipped = torch.load(os.path.join(os.path.dirname(lpips_pkg.__file__), "weights/v0.1/vgg.pth"), map_location="cpu")

    def feats(img: torch.Tensor) -> list[torch.Tensor]:
        h, out = ((2 * img - 1) - shift) / scale, []
        for i in range(30):
            h = features[i](h.clone())
            if i in RELU_INDICES:
                out.append(h / (h.square().sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return out

    with torch.no_grad():
        expected = torch.zeros(2)
        for k, (fx, fy) in enumerate(zip(feats(x), feats(y))):
            w = shipped[f"lin{k}.model.1.weight"]  # (1, C, 1, 1)
            expected += F.conv2d((fx - fy).square(), w).mean(dim=(1, 2, 3))
    torch.testing.assert_close(got.detach(), expected, rtol=1e-4, atol=1e-6)
    got.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_missing_vgg_file_names_component(tmp_path) -> None:
    with pytest.raises(MissingWeightsError, match=r"VGG16 \(LPIPS\)"):
        LPIPS(Source(pretrained=str(tmp_path / "absent.pth")))
    with pytest.raises(MissingWeightsError, match="LPIPS linear"):
        LPIPS(None, lin_path=str(tmp_path / "lin.pth"))
