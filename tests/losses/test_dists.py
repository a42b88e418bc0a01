"""DISTS: L2 pooling, the feature trunk and the distance against independent hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from losses.dists import DISTS, L2Pool
from models.pretrained import MissingWeightsError, Source

CHANNELS = [3, 64, 128, 256, 512, 512]


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> tuple[str, nn.Sequential]:
    torch.manual_seed(0)
    features = make_layers(cfgs["D"])  # torchvision vgg16 features, random weights
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # a full torchvision file also has the classifier
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(state, path)
    return str(path), features.eval()


@pytest.fixture(scope="module")
def dists(vgg_file) -> DISTS:
    return DISTS(Source(pretrained=vgg_file[0]))


def _hand_l2pool(x: np.ndarray) -> np.ndarray:
    """Explicit loops over output pixels and taps (vectorised over batch and channels only):
    sqrt(sum_uv w_uv x[2i+u-1, 2j+v-1]^2 + 1e-12), zeros outside, w = [[1,2,1],[2,4,2],[1,2,1]]/16."""
    w = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float64) / 16
    b, c, h, wd = x.shape
    out = np.zeros((b, c, (h + 1) // 2, (wd + 1) // 2))
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            acc = np.zeros((b, c))
            for u in range(3):
                for v in range(3):
                    r, s = 2 * i + u - 1, 2 * j + v - 1
                    if 0 <= r < h and 0 <= s < wd:
                        acc += w[u, v] * x[:, :, r, s] ** 2
            out[:, :, i, j] = np.sqrt(acc + 1e-12)
    return out


def test_l2pool_matches_hand_computation() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 3, 5, 6)
    out = L2Pool()(x)
    assert out.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(out.numpy(), _hand_l2pool(x.double().numpy()), rtol=1e-5, atol=1e-6)


def test_features_match_torchvision_trunk_with_l2_pooling(dists, vgg_file) -> None:
    """Run the saved torchvision layers one by one, max-pools swapped for the hand L2 pool."""
    _, features = vgg_file
    torch.manual_seed(2)
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    h = (x - mean) / std
    expected = [x]
    with torch.no_grad():
        for i in range(30):
            layer = features[i]
            if isinstance(layer, nn.MaxPool2d):
                h = torch.from_numpy(_hand_l2pool(h.double().numpy())).float()
            else:
                h = layer(h.clone())
            if i in (3, 8, 15, 22, 29):  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
                expected.append(h.clone())
        got = dists.features(x)
    assert [f.shape[1] for f in got] == CHANNELS
    assert [f.shape[-1] for f in got] == [32, 32, 16, 8, 4, 2]
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_distance_matches_numpy_loops(dists) -> None:
    torch.manual_seed(3)
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        fx, fy = dists.features(x), dists.features(y)
        got = dists(x, y, reduction="none")
    alpha = dists.alpha.flatten().double().numpy()
    beta = dists.beta.flatten().double().numpy()
    w_sum = alpha.sum() + beta.sum()
    c = 1e-6
    expected = []
    for b in range(2):
        total, idx = 0.0, 0
        for k in range(6):
            a_k, b_k = fx[k][b].double().numpy(), fy[k][b].double().numpy()
            for ch in range(a_k.shape[0]):
                p, q = a_k[ch], b_k[ch]
                mp, mq = p.mean(), q.mean()
                vp, vq = ((p - mp) ** 2).mean(), ((q - mq) ** 2).mean()
                cov = ((p - mp) * (q - mq)).mean()
                lum = (2 * mp * mq + c) / (mp**2 + mq**2 + c)
                struct = (2 * cov + c) / (vp + vq + c)
                total += alpha[idx] * lum + beta[idx] * struct
                idx += 1
        assert idx == 1475
        expected.append(1 - total / w_sum)
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dists(x, y), got.mean())


def test_identity_positive_and_gradient(dists) -> None:
    torch.manual_seed(4)
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    assert dists(x, x.clone()).abs().item() < 1e-6
    x_req = x.clone().requires_grad_(True)
    d = dists(x_req, y)
    assert d.item() > 1e-3
    d.backward()
    assert x_req.grad is not None and x_req.grad.abs().sum() > 0 and torch.isfinite(x_req.grad).all()
    assert sum(p.requires_grad for p in dists.parameters()) == 0
    assert dists.alpha.grad is None


def test_frozen_eval_and_fp32_under_autocast(dists) -> None:
    dists.train()
    assert not dists.training and not any(m.training for m in dists.modules())
    torch.manual_seed(5)
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    ref = dists(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = dists(x.bfloat16(), y.bfloat16())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, dists(x.bfloat16().float(), y.bfloat16().float()))
    assert abs(got.item() - ref.item()) < 1e-2


def test_random_alpha_beta_official_init(dists) -> None:
    a, b = dists.alpha.flatten(), dists.beta.flatten()
    assert a.shape == (1475,) and abs(a.mean().item() - 0.1) < 2e-3 and abs(a.std().item() - 0.01) < 2e-3
    assert abs(b.mean().item() - 0.1) < 2e-3
    assert "alpha" in dists.state_dict() and "beta" in dists.state_dict()


@pytest.mark.parametrize("wrap", ["official", "pyiqa_params"])
def test_alpha_beta_file_formats(vgg_file, tmp_path, wrap) -> None:
    torch.manual_seed(6)
    alpha, beta = torch.rand(1, 1475, 1, 1), torch.rand(1, 1475, 1, 1)
    payload = {"alpha": nn.Parameter(alpha), "beta": nn.Parameter(beta)}
    if wrap == "pyiqa_params":
        payload = {"params": {"alpha": alpha, "beta": beta}}
    path = tmp_path / "ab.pth"
    torch.save(payload, path)
    d = DISTS(Source(pretrained=vgg_file[0]), alpha_beta=str(path))
    torch.testing.assert_close(d.alpha, alpha)
    torch.testing.assert_close(d.beta, beta)
    assert sum(p.requires_grad for p in d.parameters()) == 0


def test_missing_files_name_the_component(tmp_path, vgg_file) -> None:
    with pytest.raises(MissingWeightsError, match=r"VGG16 \(DISTS\)"):
        DISTS(Source(pretrained=str(tmp_path / "nope" / "vgg16.pth")))
    with pytest.raises(MissingWeightsError, match="alpha/beta"):
        DISTS(Source(pretrained=vgg_file[0]), alpha_beta=str(tmp_path / "missing.pth"))
    bad = tmp_path / "bad.pth"
    torch.save({"gamma": torch.zeros(3)}, bad)
    with pytest.raises(MissingWeightsError, match="alpha"):
        DISTS(Source(pretrained=vgg_file[0]), alpha_beta=str(bad))


def test_random_init_trunk_builds_from_empty_config() -> None:
    d = DISTS(Source(config={}))
    x = torch.rand(1, 3, 32, 32)
    assert d(x, x).abs().item() < 1e-6
    with pytest.raises(ValueError):
        DISTS(Source(config={"depth": 3}))
