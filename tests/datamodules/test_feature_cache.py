"""The VLM feature cache read by the data pipeline: round trip, training batches carrying ``cond_features`` (B, L, D)
equal to the cached entries of their paths (through workers and the pair pool), clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from datamodules import SRDataModule
from datamodules.datasets import HQImageDataset
from datamodules.degradation import RealESRGANDegradation
from datamodules.feature_cache import MANIFEST, CachedFeatureDataset, FeatureCache, bicubic_lr, collate_features
from models.conditions import VLMCondition
from models.pretrained import Source
from tiny_models import TINY_QWEN3_VL, PROMPT_IDS



@pytest.fixture(scope="module")
def vlm() -> VLMCondition:
    torch.manual_seed(0)
    return VLMCondition(Source(config=TINY_QWEN3_VL), prompt_ids=PROMPT_IDS, dtype="fp32", min_pixels=16 * 16)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory, vlm: VLMCondition) -> Path:
    """Entries for every bundled photo (the ids ``batch["path"]`` holds without train_dirs) and a manifest."""
    root = tmp_path_factory.mktemp("cache")
    cache = FeatureCache(str(root), tag="bicubic-x4|tiny", dtype="fp32")
    g = torch.Generator().manual_seed(0)
    assert cache.precompute(vlm, [(i, torch.rand(3, 32, 32, generator=g)) for i in HQImageDataset(None).paths]) == 8
    (root / MANIFEST).write_text(json.dumps({"tag": cache.tag, "dtype": "fp32", "feature_dim": vlm.feature_dim}))
    return root


def test_feature_cache_round_trip(tmp_path, vlm: VLMCondition) -> None:
    cache = FeatureCache(str(tmp_path), tag="bicubic-x4|tiny", dtype="fp32")
    hq = torch.rand(3, 3, 64, 64)
    items = [(f"/data/img{i}.png", hq[i]) for i in range(3)]
    assert cache.precompute(vlm, items) == 3
    assert cache.precompute(vlm, items) == 0  # present entries are skipped
    batch = cache.load_batch(["/data/img0.png", "/data/img2.png"])
    ref = vlm(bicubic_lr(hq[[0, 2]]), 2)
    torch.testing.assert_close(batch, ref)
    assert bicubic_lr(hq).shape == (3, 3, 16, 16)
    other = FeatureCache(str(tmp_path), tag="realesrgan-seed0|tiny")
    assert other.key("/data/img0.png") != cache.key("/data/img0.png")
    with pytest.raises(KeyError):
        other.load("/data/img0.png")
    bf16 = FeatureCache(str(tmp_path / "b"), tag="t")
    bf16.save("a", ref[0])
    assert bf16.load("a").dtype == torch.bfloat16


def _datamodule(cache_dir: Path, num_workers: int = 0, pool_size: int = 0) -> SRDataModule:
    dm = SRDataModule(crop_size=32, batch_size=2, num_workers=num_workers, feature_cache=str(cache_dir),
                      degradation=RealESRGANDegradation(preset="light", scale=4, pool_size=pool_size))
    dm.trainer = SimpleNamespace(training=True, testing=False, global_rank=0, world_size=1)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("num_workers", [0, 1])
def test_training_batches_carry_the_cached_features_of_their_paths(cache_dir: Path, num_workers: int) -> None:
    cache = FeatureCache(str(cache_dir), tag="bicubic-x4|tiny", dtype="fp32")
    dm = _datamodule(cache_dir, num_workers)
    assert isinstance(dm.train_dataset, CachedFeatureDataset) and len(dm.train_dataset) == 8
    batches = list(dm.train_dataloader())
    assert len(batches) == 4
    for batch in batches:
        expected = torch.stack([cache.load(p) for p in batch["path"]])  # (B, L, D)
        assert expected.shape[0] == 2 and expected.shape[-1] == 24
        assert torch.equal(batch["cond_features"], expected)


def test_the_pair_pool_keeps_features_with_their_images(cache_dir: Path) -> None:
    """Pooled pairs come back with their own path and features, not those of the incoming batch."""
    cache = FeatureCache(str(cache_dir), tag="bicubic-x4|tiny", dtype="fp32")
    dm = _datamodule(cache_dir, pool_size=4)
    returned: list[str] = []
    for batch in dm.train_dataloader():
        out = dm.on_after_batch_transfer(batch, 0)
        assert out["lq"].shape == (2, 3, 8, 8)
        assert torch.equal(out["cond_features"], torch.stack([cache.load(p) for p in out["path"]]))
        returned += out["path"]
    assert len(dm.degradation.pool) == 4 and returned != [p for b in dm.train_dataloader() for p in b["path"]]


def test_missing_cache_entry_and_length_mismatch_fail_clearly(tmp_path: Path, cache_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no VLM feature cache.*python -m datamodules\.precompute"):
        SRDataModule(feature_cache=str(tmp_path / "none"), crop_size=32).setup("fit")
    partial = FeatureCache(str(cache_dir), tag="other-tag", dtype="fp32")  # an empty cache under another tag
    dataset = CachedFeatureDataset(HQImageDataset(None, crop_size=32), partial)
    with pytest.raises(KeyError, match=r"'skimage\.data/astronaut'.*python -m datamodules\.precompute"):
        dataset[0]
    items = [{"cond_features": torch.zeros(5, 24), "path": "a"}, {"cond_features": torch.zeros(6, 24), "path": "b"}]
    with pytest.raises(ValueError, match=r"differ in length \[5, 6\]"):
        collate_features(items)
