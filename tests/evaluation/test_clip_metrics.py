"""The CLIP-based metrics against pyiqa's classes built the way pyiqa builds them, on the same small random CLIPs and
files: CLIPIQA (ours, on piq's CLIP), CLIPIQA+, LIQE, QualiCLIP. Each file is loaded by our metric through its weights
key, and by pyiqa through its own loaders (only its downloads are pointed at the local files)."""

from __future__ import annotations

import pytest
import torch

from evaluation import CLIPIQA, LIQE, CLIPIQAPlus, MetricUnavailable, QualiCLIP, quantize_8bit
from evaluation.clip_metrics import TINY_PYIQA_CLIP_RN, TINY_PYIQA_CLIP_VIT
from evaluation.pyiqa_backend import seeded

pytest.importorskip("pyiqa", reason="the CLIP metrics need the optional pyiqa extra")
pytest.importorskip("clip", reason="pyiqa's CLIP metrics import OpenAI's clip package (openai-clip)")


def _image(b: int = 2, size: int = 256, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.avg_pool2d(torch.rand(b, 3, size + 4, size + 4, generator=g), 5, 1)
    return quantize_8bit(x + 0.05 * torch.randn(x.shape, generator=g)).float()


def _clip_file(tmp_path, config: dict, seed: int = 0) -> tuple[torch.nn.Module, str]:
    """A small random CLIP of pyiqa's class, saved as a plain state dict (pyiqa's ``load`` accepts such a file)."""
    from pyiqa.archs.clip_model import CLIP

    with seeded(seed):
        clip = CLIP(**config).float().eval()
    path = str(tmp_path / f"clip{seed}.pt")
    torch.save(clip.state_dict(), path)
    return clip, path


def _pyiqa_load(path: str, *_: object, **__: object) -> torch.nn.Module:
    """pyiqa ``clip_model.load`` for a state-dict file (its own version re-reads the file handle after a failed
    TorchScript load, at the end of the file, and fails): build_model, then fp32 on the CPU."""
    from pyiqa.archs.clip_model import build_model

    return build_model(torch.load(path, map_location="cpu", weights_only=True)).float()


def test_clipiqa_on_piqs_clip_equals_pyiqa_clipiqa(tmp_path) -> None:
    from pyiqa.archs import clipiqa_arch

    _, path = _clip_file(tmp_path, TINY_PYIQA_CLIP_RN)
    x = _image(size=96)
    ours = CLIPIQA(weights={"clipiqa": path}).update(x)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(clipiqa_arch, "load", _pyiqa_load)
        theirs = clipiqa_arch.CLIPIQA(model_type="clipiqa", backbone=path, pretrained=False)(x).flatten().double()
    assert ours.tolist() == pytest.approx(theirs.tolist(), abs=1e-5)


def test_clipiqa_plus_equals_pyiqa_with_the_same_clip_and_learned_context(tmp_path) -> None:
    from pyiqa.archs import clipiqa_arch

    _, clip_path = _clip_file(tmp_path, TINY_PYIQA_CLIP_RN)
    with seeded(5):
        ctx = 0.5 * torch.randn(2, 16, TINY_PYIQA_CLIP_RN["transformer_width"])  # the learned-prompt file's layout
    torch.save(ctx, tmp_path / "ctx.pth")
    ours = CLIPIQAPlus(weights={"clipiqa": clip_path, "clipiqa+": str(tmp_path / "ctx.pth")})
    assert torch.equal(ours.net.prompt_learner.ctx.data, ctx)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(clipiqa_arch, "load", _pyiqa_load)
        theirs = clipiqa_arch.CLIPIQA(model_type="clipiqa+", backbone=clip_path, pretrained=False)
    theirs.prompt_learner.ctx.data = ctx.clone()  # what pyiqa does with the downloaded file
    x = _image(size=96)
    scores = ours.update(x)
    assert scores.tolist() == pytest.approx(theirs(x).flatten().double().tolist(), abs=1e-6)
    assert ((scores > 0) & (scores < 1)).all()


def test_liqe_equals_pyiqa_on_the_same_checkpoint(tmp_path) -> None:
    from pyiqa.archs import liqe_arch

    source = LIQE(random_init=True)  # a small ViT CLIP
    torch.save({"params": source.net.state_dict()}, tmp_path / "liqe.pt")
    ours = LIQE(weights={"liqe": str(tmp_path / "liqe.pt")})
    clip, _ = _clip_file(tmp_path, TINY_PYIQA_CLIP_VIT, seed=9)  # a different CLIP: the checkpoint must overwrite it
    with pytest.MonkeyPatch.context() as mp:  # pyiqa would download ViT-B/32 and reuse a cached text-feature file
        mp.setattr(liqe_arch, "load", lambda *_, **__: clip)
        mp.setattr(liqe_arch, "DEFAULT_CACHE_DIR", str(tmp_path))
        theirs = liqe_arch.LIQE(pretrained=False, pretrained_model_path=str(tmp_path / "liqe.pt")).eval()
    x = _image(size=256)
    scores = ours.update(x)
    assert scores.tolist() == pytest.approx(theirs(x).flatten().double().tolist(), abs=1e-5)
    assert ((scores >= 1) & (scores <= 5)).all()
    with pytest.raises(ValueError, match="224"):
        ours.update(_image(size=200))


def test_qualiclip_equals_pyiqa_on_the_same_checkpoint(tmp_path) -> None:
    from pyiqa.archs import qualiclip_arch

    clip, clip_path = _clip_file(tmp_path, TINY_PYIQA_CLIP_RN, seed=2)
    with seeded(4):
        prompts = torch.nn.functional.normalize(torch.randn(14, TINY_PYIQA_CLIP_RN["embed_dim"]), dim=-1)
    state = {f"clip_model.{k}": 0.9 * v for k, v in clip.state_dict().items()}  # differs from clip{2}.pt
    torch.save({**state, "prompts_features": prompts}, tmp_path / "QualiCLIP.pth")
    ours = QualiCLIP(weights={"qualiclip": str(tmp_path / "QualiCLIP.pth")})
    with pytest.MonkeyPatch.context() as mp:  # pyiqa downloads QualiCLIP.pth; its RN50 comes from clip_path
        mp.setattr(qualiclip_arch, "load_file_from_url", lambda *_, **__: str(tmp_path / "QualiCLIP.pth"))
        mp.setattr(qualiclip_arch, "load", _pyiqa_load)
        theirs = qualiclip_arch.QualiCLIP(model_type="qualiclip", backbone=clip_path, pretrained=False).eval()
    x = _image(size=96)
    scores = ours.update(x)
    assert scores.tolist() == pytest.approx(theirs(x).flatten().double().tolist(), abs=1e-6)
    assert ((scores > 0) & (scores < 1)).all()


def test_random_init_builds_and_missing_files_are_named(tmp_path) -> None:
    x = _image(size=224)
    for metric in (CLIPIQAPlus(random_init=True), QualiCLIP(random_init=True)):
        assert torch.isfinite(metric.update(x)).all() and not any(p.requires_grad for p in metric.parameters())
    missing = str(tmp_path / "nope.pth")
    with pytest.raises(MetricUnavailable, match="CLIP-IQA\\+_learned_prompts"):
        CLIPIQAPlus(weights={"clipiqa": _clip_file(tmp_path, TINY_PYIQA_CLIP_RN)[1], "clipiqa+": missing})
    with pytest.raises(MetricUnavailable, match="liqe_koniq.pt"):
        LIQE(weights={"liqe": missing})
    with pytest.raises(MetricUnavailable, match="QualiCLIP.pth"):
        QualiCLIP(weights={"qualiclip": missing})
