"""Each learned metric builds from a random-init architecture and returns finite (B,) scores on CPU; weight
files load into the same classes. MUSIQ/MANIQA/NIQE need the optional ``pyiqa`` extra and are skipped without it."""

from __future__ import annotations

import pytest
import torch

from evaluation import CLIPIQA, MANIQA, MUSIQ, NIQE, DISTSMetric, LPIPSMetric
from evaluation.no_reference import CLIPIQA_PROMPTS, TINY_CLIP, clip_prompt_tokens
from evaluation.pyiqa_backend import load_pyiqa_state


def _images(b: int = 2, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(b, 3, size, size, generator=g)
    return (gt + 0.1 * torch.randn(gt.shape, generator=g)).clamp(0, 1), gt


def _check(scores: torch.Tensor, b: int = 2) -> None:
    assert scores.shape == (b,) and scores.dtype == torch.float64 and torch.isfinite(scores).all()


def test_lpips_random_trunk_and_torchvision_weight_file(tmp_path) -> None:
    sr, gt = _images()
    metric = LPIPSMetric("vgg", random_init=True)
    assert metric.name == "lpips_vgg" and not metric.higher_is_better and metric.needs_reference
    _check(metric.update(sr, gt))
    assert metric.update(gt, gt).abs().max() < 1e-6
    assert not any(p.requires_grad for p in metric.parameters())
    metric.train()
    assert not metric.training and not metric.net.training  # Dropout stays off
    # a torchvision-style VGG16 file ("features.N.weight") fills the trunk
    from losses.vgg import build_vgg_features
    from models.pretrained import Source

    torch.manual_seed(1)
    features = build_vgg_features(Source(config={}), "vgg16")
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, tmp_path / "vgg16.pth")
    loaded = LPIPSMetric("vgg", weights={"vgg16": str(tmp_path / "vgg16.pth")})
    assert torch.equal(getattr(loaded.net.net.slice3, "12").weight, features[12].weight)  # conv3_3
    assert torch.equal(getattr(loaded.net.net.slice5, "28").bias, features[28].bias)  # conv5_3
    _check(loaded.update(sr, gt))


def test_lpips_alex_random_init() -> None:
    sr, gt = _images()
    metric = LPIPSMetric("alex", random_init=True)
    assert metric.name == "lpips_alex"
    _check(metric.update(sr, gt))


def test_dists_random_init_and_weight_files(tmp_path) -> None:
    sr, gt = _images()
    metric = DISTSMetric(random_init=True)
    _check(metric.update(sr, gt))
    assert metric.update(gt, gt).abs().max() < 1e-5
    assert not any(p.requires_grad for p in metric.parameters())
    # the same files a user provides: torchvision's VGG16 state dict and the {alpha, beta} file
    vgg = {f"features.{k.split('.', 1)[1]}": v for k, v in metric.net.stages.state_dict().items()}
    torch.save(vgg, tmp_path / "vgg16.pth")
    alpha = torch.rand(1, 1475, 1, 1)
    torch.save({"alpha": alpha, "beta": torch.rand(1, 1475, 1, 1)}, tmp_path / "dists.pt")
    loaded = DISTSMetric(weights={"vgg16": str(tmp_path / "vgg16.pth"), "dists": str(tmp_path / "dists.pt")})
    assert torch.equal(loaded.net.alpha, alpha)
    _check(loaded.update(sr, gt))


def test_clipiqa_random_init_and_state_dict_round_trip(tmp_path) -> None:
    sr, _ = _images()
    metric = CLIPIQA(random_init=True)
    scores = metric.update(sr)
    _check(scores)
    assert ((scores > 0) & (scores < 1)).all()  # a mean of softmax probabilities
    assert metric.text.shape == (len(CLIPIQA_PROMPTS), TINY_CLIP["embed_dim"])
    # a plain state-dict file builds the same architecture (piq's build_model infers it; weights pass through fp16)
    torch.save(metric.clip.state_dict(), tmp_path / "clip.pt")
    loaded = CLIPIQA(weights={"clipiqa": str(tmp_path / "clip.pt")})
    assert torch.allclose(loaded.update(sr), scores, atol=5e-3)


def test_clipiqa_prompt_tokens() -> None:
    tokens = clip_prompt_tokens()
    assert tokens.shape == (10, 77) and (tokens[:, 0] == 49406).all()
    assert (tokens.argmax(dim=-1) == torch.tensor([len(ids) + 1 for _, ids in CLIPIQA_PROMPTS])).all()  # EOT
    open_clip = pytest.importorskip("open_clip", reason="no CLIP tokenizer installed to re-derive the ids")
    assert torch.equal(open_clip.tokenize([p for p, _ in CLIPIQA_PROMPTS]), tokens)


def test_musiq_random_init() -> None:
    pytest.importorskip("pyiqa", reason="MUSIQ needs the optional pyiqa extra")
    sr, _ = _images(size=64)
    metric = MUSIQ(random_init=True, config=dict(hidden_size=32, mlp_dim=64, num_heads=2, num_layers=1,
                                                 longer_side_lengths=[48]))
    _check(metric.update(sr))


def test_maniqa_random_init() -> None:
    pytest.importorskip("pyiqa", reason="MANIQA needs the optional pyiqa extra")
    sr, _ = _images(size=64)
    config = dict(vit=dict(patch_size=32, embed_dim=64, depth=10, num_heads=2), embed_dim=64, patch_size=32,
                  window_size=7, dim_mlp=64, num_heads=[2, 2], test_sample=1)
    _check(MANIQA(random_init=True, config=config).update(sr))


def test_niqe_random_pristine_model() -> None:
    pytest.importorskip("pyiqa", reason="NIQE needs the optional pyiqa extra")
    sr, _ = _images(size=96)
    metric = NIQE(random_init=True)
    assert not metric.higher_is_better
    _check(metric.update(sr))


def test_pyiqa_checkpoint_loader_unwraps_params_and_module_prefix(tmp_path) -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    state = {f"module.{k}": torch.randn_like(v) for k, v in net.state_dict().items()}
    torch.save({"params": state}, tmp_path / "ckpt.pth")
    load_pyiqa_state(net, str(tmp_path / "ckpt.pth"))
    assert torch.equal(net[0].weight, state["module.0.weight"])
