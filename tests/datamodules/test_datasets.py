"""Datasets: crops with reflect padding, broken-file skipping, seeding, the epoch sampler, paired sets, demo set."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.datasets import (
    DemoEvalDataset, EpochSampler, HQImageDataset, PairedImageDataset, predict_dataset, reflect_pad_to,
)
from datamodules.degradation import DegradationConfig, KernelSampler
from datamodules.images import DataError, bundled_photos


def _save(path: Path, h: int, w: int, seed: int = 0) -> np.ndarray:
    array = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return array


def test_small_image_is_reflect_padded_to_the_crop(tmp_path: Path) -> None:
    array = _save(tmp_path / "small.png", 10, 12)
    dataset = HQImageDataset([str(tmp_path)], crop_size=16, flip=False)
    item = dataset[0]
    assert item["gt"].shape == (3, 16, 16)
    expected = np.pad(array, ((3, 3), (2, 2), (0, 0)), mode="reflect")  # independent reference
    torch.testing.assert_close(item["gt"], torch.from_numpy(expected).permute(2, 0, 1).float() / 255)


def test_tiny_image_is_padded_by_repeated_reflection() -> None:
    image = torch.arange(9, dtype=torch.float32).reshape(1, 3, 3).expand(3, 3, 3)
    padded = reflect_pad_to(image, 16, 20)  # needs several reflections of a 3x3 image
    assert padded.shape == (3, 16, 20)
    assert set(padded.unique().tolist()) <= set(range(9))
    # Reflection never repeats the edge pixel: neighbours along a row always differ (first row of 0,1,2).
    row = padded[0, 0]
    assert bool((row[1:] != row[:-1]).all())
    one_pixel = reflect_pad_to(torch.full((3, 1, 1), 0.25), 4, 4)  # 1 px: replicate instead of reflect
    assert one_pixel.shape == (3, 4, 4) and bool((one_pixel == 0.25).all())


def test_crop_flip_kernels_and_determinism(tmp_path: Path) -> None:
    _save(tmp_path / "big.png", 44, 50)
    sampler = KernelSampler(DegradationConfig.preset("realesrgan"))
    dataset = HQImageDataset([str(tmp_path)], crop_size=32, kernel_sampler=sampler, seed=3)
    a, b = dataset[(0, 2, 5)], dataset[(0, 2, 5)]
    assert a["gt"].shape == (3, 32, 32) and a["path"] == str(tmp_path / "big.png")
    for key in ("gt", "kernel1", "kernel2", "sinc_kernel"):
        assert torch.equal(a[key], b[key]), key  # same (seed, epoch, position) -> same item
    for key in ("kernel1", "kernel2", "sinc_kernel"):
        assert a[key].shape == (21, 21) and a[key].dtype == torch.float32
        assert abs(a[key].sum().item() - 1.0) < 1e-4
    others = [dataset[(0, 2, p)]["gt"] for p in range(6)] + [dataset[(0, 3, 5)]["gt"]]
    assert len({tuple(x.flatten()[:64].tolist()) for x in others}) == len(others)  # positions / epochs differ
    reseeded = HQImageDataset([str(tmp_path)], crop_size=32, kernel_sampler=sampler, seed=4)[(0, 2, 5)]
    assert not torch.equal(reseeded["gt"], a["gt"])
    # A flipped item is a mirrored crop of the image: some position must produce one, some must not.
    full = torch.from_numpy(np.array(Image.open(tmp_path / "big.png"))).permute(2, 0, 1).float() / 255
    windows = full.unfold(1, 32, 1).unfold(2, 32, 1)  # (3, 13, 19, 32, 32)
    flips = []
    for p in range(12):
        gt = dataset[(0, 0, p)]["gt"]
        plain = (windows - gt[:, None, None]).abs().amax(dim=(0, 3, 4)).min().item() == 0
        mirrored = (windows - gt.flip(-1)[:, None, None]).abs().amax(dim=(0, 3, 4)).min().item() == 0
        assert plain or mirrored
        flips.append(mirrored and not plain)
    assert any(flips) and not all(flips)


def test_broken_files_skipped_with_one_warning_each(tmp_path: Path) -> None:
    _save(tmp_path / "a_good.png", 40, 40)
    (tmp_path / "b_empty.png").write_bytes(b"")
    (tmp_path / "c_text.jpg").write_text("not an image")
    _save(tmp_path / "d_trunc.png", 40, 40, seed=1)
    data = (tmp_path / "d_trunc.png").read_bytes()
    (tmp_path / "d_trunc.png").write_bytes(data[: len(data) // 2])
    dataset = HQImageDataset([str(tmp_path)], crop_size=16)
    assert len(dataset) == 4
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [dataset[(i % 4, 0, i)] for i in range(12)]
    assert all(item["path"].endswith("a_good.png") for item in items)
    assert all(item["gt"].shape == (3, 16, 16) for item in items)
    messages = [str(w.message) for w in caught]
    for name in ("b_empty.png", "c_text.jpg", "d_trunc.png"):
        assert sum(name in m for m in messages) == 1, (name, messages)
    assert len(messages) == 3


def test_all_files_broken_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"")
    dataset = HQImageDataset([str(tmp_path)], crop_size=8)
    with pytest.warns(UserWarning, match="x.png"), pytest.raises(DataError, match="None of the 1"):
        dataset[0]


def test_bundled_photos_when_no_folder() -> None:
    dataset = HQImageDataset(None, crop_size=64, flip=False)
    assert len(dataset) == len(bundled_photos()) == 8
    item = dataset[0]
    assert item["path"] == "skimage.data/astronaut" and item["gt"].shape == (3, 64, 64)
    assert "kernel1" not in item


def test_missing_and_empty_train_folders_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere"):
        HQImageDataset([str(tmp_path / "nowhere")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        HQImageDataset([str(tmp_path / "empty")])


def test_epoch_sampler_partitions_ranks_and_reshuffles() -> None:
    ranks = [EpochSampler(10, num_replicas=3, rank=r, seed=1) for r in range(3)]
    keys = [list(s) for s in ranks]
    assert [len(k) for k in keys] == [4, 4, 4] and all(len(s) == 4 for s in ranks)
    positions = sorted(p for k in keys for _, _, p in k)
    assert positions == list(range(12))  # disjoint, complete, padded to a multiple of the world size
    indices = [i for k in keys for i, _, p in k if p < 10]
    assert sorted(indices) == list(range(10))  # one pass = a permutation
    ranks[0].set_epoch(1)
    epoch1 = list(ranks[0])
    assert all(e == 1 for _, e, _ in epoch1) and [i for i, _, _ in epoch1] != [i for i, _, _ in keys[0]]
    assert list(EpochSampler(10, num_replicas=3, rank=0, seed=1)) == keys[0]  # deterministic
    with_replacement = list(EpochSampler(3, epoch_length=50, seed=0))
    assert len(with_replacement) == 50 and {i for i, _, _ in with_replacement} == {0, 1, 2}
    assert len(EpochSampler(8, num_replicas=2, min_per_rank=6)) == 6  # at least one batch per rank


def _pair(root: Path, stem: str, h: int, w: int, scale: int = 4, gt_stem: str | None = None) -> None:
    _save(root / "lq" / f"{stem}.png", h, w)
    _save(root / "gt" / f"{gt_stem or stem}.png", h * scale, w * scale)


def test_paired_dataset_matches_by_stem(tmp_path: Path) -> None:
    _pair(tmp_path, "0001", 6, 5)
    _pair(tmp_path, "0002x4", 4, 4, gt_stem="0002")  # DIV2K naming
    _save(tmp_path / "gt" / "extra.png", 8, 8)  # GT without LQ is ignored
    dataset = PairedImageDataset(str(tmp_path / "lq"), str(tmp_path / "gt"), scale=4, name="set5")
    assert len(dataset) == 2 and dataset.name == "set5"
    item = dataset[0]
    assert item["name"] == "0001" and item["path"] == str(tmp_path / "lq" / "0001.png")
    assert item["lq"].shape == (3, 6, 5) and item["gt"].shape == (3, 24, 20)
    assert dataset[1]["gt"].shape == (3, 16, 16)


def test_lq_without_gt_names_the_file(tmp_path: Path) -> None:
    _pair(tmp_path, "0001", 4, 4)
    _save(tmp_path / "lq" / "orphan.png", 4, 4)
    with pytest.raises(DataError, match="orphan.png"):
        PairedImageDataset(str(tmp_path / "lq"), str(tmp_path / "gt"))


def test_wrong_gt_size_names_both_files(tmp_path: Path) -> None:
    _save(tmp_path / "lq" / "img.png", 4, 4)
    _save(tmp_path / "gt" / "img.png", 15, 16)
    with pytest.raises(DataError, match=r"gt[/\\]img\.png.*lq[/\\]img\.png"):
        PairedImageDataset(str(tmp_path / "lq"), str(tmp_path / "gt"), scale=4)
    # Also checked when the pair is loaded (files changed after setup).
    _save(tmp_path / "gt" / "img.png", 16, 16)
    dataset = PairedImageDataset(str(tmp_path / "lq"), str(tmp_path / "gt"), scale=4)
    _save(tmp_path / "gt" / "img.png", 16, 12)
    with pytest.raises(DataError, match=r"gt[/\\]img\.png.*lq[/\\]img\.png"):
        dataset[0]


def test_lq_only_and_broken_eval_files(tmp_path: Path) -> None:
    _save(tmp_path / "in" / "a.png", 5, 7)
    (tmp_path / "in" / "b.png").write_bytes(b"")
    with pytest.warns(UserWarning, match="b.png"):
        dataset = predict_dataset(tmp_path / "in")
    assert len(dataset) == 1
    item = dataset[0]
    assert set(item) == {"lq", "path", "name"} and item["lq"].shape == (3, 5, 7) and item["name"] == "a"
    with pytest.raises(DataError, match="nope"):
        PairedImageDataset(str(tmp_path / "nope"))


def test_demo_eval_dataset_is_deterministic() -> None:
    first, second = DemoEvalDataset(scale=4, size=64, seed=0), DemoEvalDataset(scale=4, size=64, seed=0)
    assert len(first) == 8
    item = first[0]
    assert item["name"] == "astronaut" and item["lq"].shape == (3, 16, 16) and item["gt"].shape == (3, 64, 64)
    astronaut = torch.from_numpy(np.array(bundled_photos()[0][1])).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(item["gt"], astronaut[:, 224:288, 224:288])  # centre crop of 512 x 512
    assert torch.equal(first.lq, second.lq)
    assert not torch.equal(first.lq, DemoEvalDataset(scale=4, size=64, seed=1).lq)
    assert torch.equal(first.lq, (first.lq * 255).round() / 255)  # 8-bit levels
    area = torch.nn.functional.avg_pool2d(first.gt, 4)
    assert 0 < (first.lq - area).abs().mean().item() < 0.2  # degraded, yet the same picture
