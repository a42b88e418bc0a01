"""Our metrics against pyiqa's own classes on the same random weights and inputs: LPIPS-Alex, NIMA, NIQE (both
pristine-file formats, float32 vs float64), and our default options against pyiqa's ``DEFAULT_CONFIGS``."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import torch

from evaluation import NIMA, NIQE, LPIPSMetric, load_pristine_model, quantize_8bit
from evaluation.pyiqa_backend import seeded

pyiqa = pytest.importorskip("pyiqa", reason="the parity tests need the optional pyiqa extra")


def _images(b: int = 2, size: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    gt = torch.nn.functional.avg_pool2d(torch.rand(b, 3, size + 2, size + 2, generator=g), 3, 1)
    return quantize_8bit((gt + 0.08 * torch.randn(gt.shape, generator=g)).clamp(0, 1)), quantize_8bit(gt)


def test_our_defaults_are_pyiqas_defaults() -> None:
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    opts = {k: v["metric_opts"] for k, v in DEFAULT_CONFIGS.items()}
    assert opts["lpips"] == {"type": "LPIPS", "net": "alex", "version": "0.1"}  # our lpips_alex
    assert opts["psnry"]["test_y_channel"] and not opts["psnr"]["test_y_channel"]  # psnr_y_pyiqa, psnr_rgb
    assert opts["ssim"]["test_y_channel"] and not opts["ssim"]["downsample"]  # ssim_y_pyiqa
    assert opts["nima"] == {"type": "NIMA", "num_classes": 10, "base_model_name": "inception_resnet_v2"}
    assert opts["clipiqa+"] == {"type": "CLIPIQA", "model_type": "clipiqa+"}
    assert opts["liqe"] == {"type": "LIQE", "pretrained": "koniq"}
    assert opts["qualiclip"] == {"type": "QualiCLIP", "model_type": "qualiclip"}
    assert opts["qalign"] == {"type": "QAlign"}
    assert opts["niqe"] == {"type": "NIQE", "test_y_channel": True}
    assert opts["musiq"]["pretrained"] == "koniq10k" and opts["maniqa"]["scale"] == 0.8


def test_lpips_alex_equals_pyiqa_lpips_on_the_same_weights() -> None:
    import torchvision
    from pyiqa.archs import lpips_arch

    ours = LPIPSMetric("alex", random_init=True)
    with seeded(3):  # random linear layers too (the lpips package ships its calibrated ones)
        for lin in ours.net.lins:
            lin.model[1].weight.data.uniform_(0, 0.2)
    with pytest.MonkeyPatch.context() as mp:  # pyiqa's trunk always asks torchvision for ImageNet weights
        alexnet = torchvision.models.alexnet
        mp.setattr(lpips_arch.models, "alexnet", lambda **_: alexnet(weights=None))
        theirs = lpips_arch.LPIPS(net="alex", pretrained=False, pnet_rand=True).eval()
    theirs.load_state_dict(ours.net.state_dict())
    sr, gt = _images(size=64)
    expected = theirs(sr, gt, normalize=True).flatten().double()
    assert ours.update(sr, gt).tolist() == pytest.approx(expected.tolist(), rel=1e-6)
    assert ours.update(sr, gt).min() > 1e-3  # a real, non-zero distance


def test_nima_equals_pyiqa_nima_and_reports_the_mean_score() -> None:
    from pyiqa.archs.nima_arch import NIMA as PyiqaNIMA

    config = {"base_model_name": "mobilenetv3_small_050"}
    ours = NIMA(random_init=True, config=config)
    with torch.no_grad():
        ours.net.classifier[2].weight.normal_(0, 1)  # a spread-out distribution, not the near-uniform default
    with pytest.MonkeyPatch.context() as mp:
        create = pyiqa.archs.nima_arch.timm.create_model
        mp.setattr(pyiqa.archs.nima_arch.timm, "create_model", lambda n, pretrained=False, **k: create(n, **k))
        theirs = PyiqaNIMA(pretrained=False, num_classes=10, **config).eval()
    theirs.load_state_dict(ours.net.state_dict())
    sr, _ = _images(size=200)
    scores = ours.update(sr)
    assert scores.tolist() == pytest.approx(theirs(sr).flatten().double().tolist(), rel=1e-6)
    dist = theirs(sr, return_mos=False, return_dist=True)  # (B, 10) softmax over the AVA bins
    assert scores.tolist() == pytest.approx((dist * torch.arange(1, 11)).sum(1).double().tolist(), rel=1e-6)
    assert ((scores > 1) & (scores < 10)).all() and scores.std() > 0


@pytest.mark.slow
def test_nima_inception_resnet_v2_loads_a_pyiqa_checkpoint(tmp_path) -> None:
    """The real architecture (55 M parameters) from a file in pyiqa's layout (``params``)."""
    source = NIMA(random_init=True)
    torch.save({"params": source.net.state_dict()}, tmp_path / "nima.pth")
    loaded = NIMA(weights={"nima": str(tmp_path / "nima.pth")})
    sr, _ = _images(b=1, size=300)
    assert loaded.update(sr).tolist() == pytest.approx(source.update(sr).tolist(), rel=1e-6)


def _pristine_pair(tmp_path) -> tuple[str, str, np.ndarray, np.ndarray]:
    """The same pristine model written as pyiqa's .mat (mu (1, 36)) and BasicSR's .npz (mu (36,))."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((36, 36))
    mu, cov = rng.random(36) * 2, a @ a.T / 36 + np.eye(36)
    scipy.io.savemat(tmp_path / "niqe_modelparameters.mat", {"mu_prisparam": mu[None], "cov_prisparam": cov})
    np.savez(tmp_path / "niqe_pris_params.npz", mu_pris_param=mu, cov_pris_param=cov,
             gaussian_window=np.ones((7, 7)) / 49)
    return str(tmp_path / "niqe_modelparameters.mat"), str(tmp_path / "niqe_pris_params.npz"), mu, cov


def test_niqe_reads_both_pristine_formats_and_equals_pyiqa(tmp_path) -> None:
    from pyiqa.archs.niqe_arch import NIQE as PyiqaNIQE

    mat, npz, mu, cov = _pristine_pair(tmp_path)
    for path in (mat, npz):
        got_mu, got_cov = load_pristine_model(path)
        assert np.array_equal(got_mu.numpy(), mu) and np.array_equal(got_cov.numpy(), cov)
    sr, _ = _images(size=200)
    from_mat = NIQE(weights={"niqe": mat}).update(sr)
    from_npz = NIQE(weights={"niqe": npz}).update(sr)
    assert torch.equal(from_mat, from_npz) and torch.isfinite(from_mat).all()
    reference = PyiqaNIQE(pretrained_model_path=mat)(sr.float()).double()  # pyiqa on float32 input
    assert from_mat.tolist() == pytest.approx(reference.tolist(), rel=1e-10)


def test_niqe_float32_vs_float64_input(tmp_path) -> None:
    """pyiqa converts to Y in the input dtype before rounding to integers, so float64 input may round some
    .5-tie lumas the other way: NIQE scores float32 (as pyiqa reads files), and the gap stays small."""
    from pyiqa.archs.niqe_arch import calculate_niqe

    mat, _, _, _ = _pristine_pair(tmp_path)
    metric = NIQE(weights={"niqe": mat})
    sr, _ = _images(b=3, size=200, seed=1)
    ours = metric.update(sr.double())  # our update casts to float32 first
    assert torch.equal(ours, metric.update(sr.float()))
    f64 = calculate_niqe(sr.double(), 0, True, "yiq", metric.mu, metric.cov).double()
    gap = (ours - f64).abs().max().item()
    print(f"NIQE float32 vs float64 input: max |difference| {gap:.2e}")
    assert gap < 1e-2


def test_niqe_rejects_a_file_without_the_pristine_keys(tmp_path) -> None:
    np.savez(tmp_path / "other.npz", something=np.zeros(3))
    with pytest.raises(ValueError, match="lacks"):
        load_pristine_model(tmp_path / "other.npz")
    from evaluation import MetricUnavailable

    with pytest.raises(MetricUnavailable, match="pristine"):
        NIQE(weights={"niqe": str(tmp_path / "other.npz")})
