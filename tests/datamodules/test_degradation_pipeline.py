"""RealESRGANDegradation: output contract, per-sample randomness, seeding, presets, crop, pool and errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from datamodules.degradation import DegradationConfig, KernelSampler, PairPool, RealESRGANDegradation

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def make_batch(gt: torch.Tensor, preset: str = "realesrgan", seed: int = 0) -> dict:
    sampler = KernelSampler(DegradationConfig.preset(preset))
    rng = np.random.default_rng(seed)
    items = [sampler(rng) for _ in range(gt.shape[0])]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    batch["gt"] = gt
    batch["path"] = [f"img{i}.png" for i in range(gt.shape[0])]
    return batch


def photo_crops(n: int, size: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    photos = [getattr(data, name)() for name in PHOTOS]
    crops = []
    for i in range(n):
        p = photos[i % len(photos)]
        top, left = rng.integers(0, p.shape[0] - size), rng.integers(0, p.shape[1] - size)
        crops.append(torch.from_numpy(p[top : top + size, left : left + size].copy()).permute(2, 0, 1))
    return torch.stack(crops).float() / 255  # (n, 3, size, size)


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    return photo_crops(64, 64)


@pytest.mark.parametrize("scale", [4, 2])
def test_output_range_8bit_levels_and_sizes(crops: torch.Tensor, scale: int) -> None:
    deg = RealESRGANDegradation(scale=scale, resize_back=True, seed=1)
    batch = make_batch(crops[:6])
    out = deg(batch)
    lq = out["lq"]
    assert lq.shape == (6, 3, 64 // scale, 64 // scale) and lq.dtype == torch.float32
    assert out["lq_up"].shape == (6, 3, 64, 64) and out["gt"].shape == (6, 3, 64, 64)
    assert lq.min() >= 0 and lq.max() <= 1
    assert float((lq * 255 - (lq * 255).round()).abs().max()) < 1e-4  # on multiples of 1/255
    assert out["lq_up"].min() >= 0 and out["lq_up"].max() <= 1
    assert float((out["lq_up"] * 255 - (out["lq_up"] * 255).round()).abs().max()) < 1e-4  # rounded too (default)
    assert out["path"] == batch["path"] and torch.equal(out["kernel1"], batch["kernel1"])
    assert "lq" not in batch  # a new dict
    torch.testing.assert_close(out["gt"], batch["gt"])  # not sharpened unless asked


def test_lq_up_is_the_rounded_resize_of_the_unrounded_lq(crops: torch.Tensor) -> None:
    """``round_lq_up`` (default): the generator's input is the bicubic resize of the LQ *before* its rounding,
    rounded to 8 bits, as the released StrSR builds it (jkwang28/StrSR ``HYPIR/dataset/batch_transform.py`` at
    46e57115: ``out = F.interpolate(out, size=(ori_h, ori_w), mode="bicubic")`` then
    ``torch.clamp((out * 255.0).round(), 0, 255) / 255.0``). ``round_lq_up=False``: the float resize of the
    rounded ``lq`` (this project's earlier behaviour)."""
    batch = make_batch(crops[:4])
    kernels = {k: batch[k] for k in ("kernel1", "kernel2", "sinc_kernel")}
    reference = RealESRGANDegradation(resize_back=True, seed=3)
    raw, _ = reference.degrade(reference.usm(batch["gt"]), kernels)  # the same draws, before any rounding
    up = F.interpolate(raw, size=(64, 64), mode="bicubic", align_corners=False)
    released = torch.clamp((up * 255.0).round(), 0, 255) / 255.0
    out = RealESRGANDegradation(resize_back=True, seed=3)(batch)
    torch.testing.assert_close(out["lq_up"], released, rtol=0, atol=1e-6)
    torch.testing.assert_close(out["lq"], torch.clamp((raw * 255.0).round(), 0, 255) / 255.0, rtol=0, atol=1e-6)
    old = RealESRGANDegradation(resize_back=True, seed=3, round_lq_up=False)(batch)
    assert torch.equal(old["lq"], out["lq"])
    torch.testing.assert_close(old["lq_up"], F.interpolate(out["lq"], size=(64, 64), mode="bicubic").clamp(0, 1))
    assert (old["lq_up"] - out["lq_up"]).abs().max() > 1 / 255  # the two orders differ visibly


def test_per_sample_parameters_differ_within_a_batch(crops: torch.Tensor) -> None:
    gt = crops[:1].expand(4, -1, -1, -1).contiguous()
    batch = make_batch(gt)
    for key in ("kernel1", "kernel2", "sinc_kernel"):  # identical kernels too: only the pipeline's draws differ
        batch[key] = batch[key][:1].expand(4, -1, -1).contiguous()
    deg = RealESRGANDegradation(seed=3)
    out = deg(batch)
    lq = out["lq"]
    for i in range(1, 4):
        assert not torch.equal(lq[0], lq[i])
    p = deg.last_params
    assert len(set(p["quality1"].tolist())) == 4 and len(set(p["quality2"].tolist())) == 4
    level1 = p["sigma1"] if p["noise1"] == "gaussian" else p["poisson_scale1"]
    assert len(set(level1.tolist())) == 4
    assert isinstance(p["scale1"], float) and p["mode1"] in ("area", "bilinear", "bicubic")  # per batch


def test_same_seed_same_output_and_set_seed(crops: torch.Tensor) -> None:
    batch = make_batch(crops[:4])
    a = RealESRGANDegradation(seed=7, gt_crop=32, resize_back=True)(batch)
    b = RealESRGANDegradation(seed=7, gt_crop=32, resize_back=True)(batch)
    for key in ("lq", "gt", "lq_up"):
        assert torch.equal(a[key], b[key])
    deg = RealESRGANDegradation(seed=8, gt_crop=32)
    c = deg(batch)
    assert not torch.equal(a["lq"], c["lq"])
    deg.set_seed(7)
    assert torch.equal(deg(batch)["lq"], a["lq"])
    deg.set_seed(7)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the transform computes in fp32 regardless
        d = deg(batch)
    assert d["lq"].dtype == torch.float32 and torch.equal(d["lq"], a["lq"])


def test_light_degrades_less_than_realesrgan(crops: torch.Tensor) -> None:
    """Mean PSNR of bicubic-upsampled LQ vs GT over 64 pairs of 64x64 photo crops."""

    def mean_psnr(preset: str) -> float:
        deg = RealESRGANDegradation(preset=preset, seed=0)
        psnrs = []
        for start in range(0, 64, 16):
            gt = crops[start : start + 16]
            lq = deg(make_batch(gt, preset, seed=start))["lq"]
            up = F.interpolate(lq, size=gt.shape[-2:], mode="bicubic").clamp(0, 1)
            mse = ((up - gt) ** 2).mean(dim=(1, 2, 3))
            psnrs.append(10 * torch.log10(1 / mse))
        return float(torch.cat(psnrs).mean())

    light, full = mean_psnr("light"), mean_psnr("realesrgan")
    assert light > full + 0.5, (light, full)


def test_sharpen_gt_replaces_gt_with_usm(crops: torch.Tensor) -> None:
    batch = make_batch(crops[:2])
    deg = RealESRGANDegradation(sharpen_gt=True)
    out = deg(batch)
    torch.testing.assert_close(out["gt"], deg.usm(batch["gt"]))
    assert not torch.equal(out["gt"], batch["gt"])


def test_paired_crop_takes_the_same_region(crops: torch.Tensor) -> None:
    batch = make_batch(crops[:3])
    full = RealESRGANDegradation(seed=5, resize_back=True)(batch)
    deg = RealESRGANDegradation(seed=5, resize_back=True, gt_crop=32)
    out = deg(batch)  # same draws for the degradation, then the crop offsets
    assert out["lq"].shape == (3, 3, 8, 8) and out["gt"].shape == (3, 3, 32, 32) and out["lq_up"].shape[-1] == 32
    for i, (t, l) in enumerate(deg.last_params["crop"]):
        assert torch.equal(out["lq"][i], full["lq"][i, :, t : t + 8, l : l + 8])
        assert torch.equal(out["gt"][i], full["gt"][i, :, 4 * t : 4 * t + 32, 4 * l : 4 * l + 32])
        assert torch.equal(out["lq_up"][i], full["lq_up"][i, :, 4 * t : 4 * t + 32, 4 * l : 4 * l + 32])


def test_pair_pool_mixes_batches_and_keeps_pairs_together() -> None:
    pool = PairPool(6)
    gen = torch.Generator().manual_seed(0)
    inserted, returned = [], []
    for step in range(6):
        ids = [2 * step, 2 * step + 1]
        batch = {
            "gt": torch.tensor(ids, dtype=torch.float32).view(2, 1, 1, 1).expand(2, 3, 4, 4).contiguous(),
            "lq": torch.tensor(ids, dtype=torch.float32).view(2, 1, 1, 1).expand(2, 3, 1, 1) + 0.5,
            "path": [f"p{i}" for i in ids],
            "meta": "not per sample",
        }
        out = pool(batch, gen, 2)
        inserted += ids
        if step < 3:  # filling: the batch comes back as is
            assert out["path"] == batch["path"] and torch.equal(out["gt"], batch["gt"])
        got = [int(v) for v in out["gt"][:, 0, 0, 0]]
        assert out["path"] == [f"p{i}" for i in got]  # each pair stays whole
        assert torch.equal(out["lq"][:, 0, 0, 0], torch.tensor(got, dtype=torch.float32) + 0.5)
        assert out["meta"] == "not per sample"
        returned += got
    held = [int(v) for v in pool.queue["gt"][:, 0, 0, 0]]
    assert sorted(returned + held) == sorted(inserted + list(range(6)))  # nothing lost, nothing duplicated
    assert returned[6:] != inserted[6:]  # pairs come back from earlier batches


def test_pool_in_the_pipeline(crops: torch.Tensor) -> None:
    deg = RealESRGANDegradation(pool_size=4, seed=0, gt_crop=32)
    for step in range(3):
        out = deg(make_batch(crops[2 * step : 2 * step + 2], seed=step))
        assert out["lq"].shape == (2, 3, 8, 8) and len(out["path"]) == 2
    assert len(deg.pool) == 4
    with pytest.raises(ValueError, match="multiple of the batch size"):
        deg(make_batch(crops[:3]))


def test_config_overrides_from_yaml_lists() -> None:
    deg = RealESRGANDegradation(preset="light", overrides={"noise_range": [1, 5], "jpeg_range2": [70, 90]})
    assert deg.config.stage1.noise_range == (1, 5) and deg.config.stage2.jpeg_range == (70, 90)
    assert deg.config.stage2.blur_prob == 0.5 and deg.config.usm_input is False
    full = DegradationConfig.preset()
    assert full.stage1.resize_range == (0.15, 1.5) and full.stage1.jpeg_range == (30.0, 95.0)
    assert full.final_sinc_prob == 0.8


def test_error_messages() -> None:
    with pytest.raises(ValueError, match=r"unknown degradation preset 'heavy'.*'light'.*'realesrgan'"):
        DegradationConfig.preset("heavy")
    with pytest.raises(ValueError, match=r"unknown degradation override key\(s\) \['noise_rnge'\].*noise_range"):
        RealESRGANDegradation(overrides={"noise_rnge": (1, 2)})
    with pytest.raises(ValueError, match="kernel_prob"):
        DegradationConfig.preset(kernel_prob=(0.5, 0.5, 0, 0, 0, 0.5))
    with pytest.raises(ValueError, match="gt_crop"):
        RealESRGANDegradation(gt_crop=30)
    with pytest.raises(ValueError, match="divisible by scale"):
        RealESRGANDegradation()(make_batch(torch.rand(1, 3, 30, 32)))
    with pytest.raises(KeyError, match="KernelSampler"):
        RealESRGANDegradation()({"gt": torch.rand(1, 3, 32, 32)})
