"""MetricCollection: missing weights are skipped with a reason while the rest runs; means, sets, forks."""

from __future__ import annotations

import math

import pytest
import torch

from evaluation import METRICS, MetricCollection, MetricUnavailable, build_metric, quantize_8bit
from evaluation.reference import PSNR

LEARNED = ["lpips_vgg", "lpips_alex", "dists", "fid", "clipiqa", "clipiqa+", "nima", "liqe", "musiq", "maniqa", "niqe",
           "qualiclip", "qalign"]
KEYS = ("vgg16", "alexnet", "dists", "fid", "clipiqa", "clipiqa+", "nima", "liqe", "musiq", "maniqa", "niqe", "qualiclip",
        "qalign")


def _batch(seed: int, b: int = 2, size: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    gt = quantize_8bit(torch.rand(b, 3, size, size, generator=g))
    return quantize_8bit((gt + 0.1 * torch.randn(gt.shape, generator=g)).clamp(0, 1)), gt


@pytest.mark.parametrize("name", LEARNED)
def test_missing_weight_file_names_metric_file_and_source(name: str, tmp_path) -> None:
    missing = str(tmp_path / "nope.pth")
    weights = {k: missing for k in KEYS}
    with pytest.raises(MetricUnavailable) as info:
        build_metric(name, weights)
    err = info.value
    assert err.name == name and str(err).startswith(f"metric '{name}' unavailable")
    assert missing in err.file or "pyiqa" in err.file  # without the extra, the package is what is missing
    assert err.where_from and err.where_from in str(err)


def test_unavailable_metrics_are_skipped_and_psnr_still_computes(tmp_path) -> None:
    missing = str(tmp_path / "absent" / "weights.pth")
    names = ["psnr_y_basicsr", "lpips_vgg", "clipiqa", "ssim_y_basicsr"]
    coll = MetricCollection(names, weights={"vgg16": missing, "clipiqa": missing}, crop_border=0)
    assert set(coll.skipped) == {"lpips_vgg", "clipiqa"} and missing in coll.skipped["lpips_vgg"]
    sr, gt = _batch(0)
    rows = coll.update(sr, gt, ["a.png", "b.png"])
    assert [r["name"] for r in rows] == ["a.png", "b.png"] and set(rows[0]) == {"name", "psnr_y_basicsr", "ssim_y_basicsr"}
    expected = PSNR(crop_border=0).update(sr, gt)
    assert [r["psnr_y_basicsr"] for r in rows] == pytest.approx(expected.tolist())
    values = coll.compute()
    assert list(values) == ["psnr_y_basicsr", "ssim_y_basicsr"]
    assert values["psnr_y_basicsr"] == pytest.approx(expected.mean().item())
    with pytest.raises(ValueError, match="unknown metric"):
        MetricCollection(["psnr_y_basicsr", "no_such_metric"])
    with pytest.raises(ValueError, match="psnr_y_basicsr .BasicSR. or psnr_y_pyiqa"):  # the old bare name
        MetricCollection(["psnr"])


def test_means_over_batches_lq_only_sets_and_forks() -> None:
    coll = MetricCollection(["psnr_y_pyiqa", "ssim_rgb", "fid"], crop_border=2, random_init=True,
                            configs={"fid": {"input_size": 75}})
    (sr1, gt1), (sr2, gt2) = _batch(1, b=1), _batch(2, b=2)
    r1 = coll.update(sr1, gt1, ["x"])
    r2 = coll.update(sr2, gt2, ["y", "z"])
    values = coll.compute()
    all_rows = r1 + r2
    assert values["psnr_y_pyiqa"] == pytest.approx(sum(r["psnr_y_pyiqa"] for r in all_rows) / 3)
    assert values["ssim_rgb"] == pytest.approx(sum(r["ssim_rgb"] for r in all_rows) / 3)
    assert math.isfinite(values["fid"]) and "fid" not in coll.skipped
    # an LQ-only set (another crop border): reference metrics are reported as skipped, not dropped silently
    lq_only = coll.fork(crop_border=4)
    assert lq_only.metrics["psnr_y_pyiqa"].crop_border == 4 and lq_only.metrics["fid"].features is coll.metrics["fid"].features
    rows = lq_only.update(sr2, None, ["u", "v"])
    assert rows == [{"name": "u"}, {"name": "v"}]
    assert lq_only.compute() == {}
    assert lq_only.skipped["psnr_y_pyiqa"] == "no ground truth in this set"
    assert "2 images" in lq_only.skipped["fid"]
    assert coll.compute()["psnr_y_pyiqa"] == pytest.approx(values["psnr_y_pyiqa"])  # the fork left the first set alone
    coll.reset()
    assert coll.rows == [] and coll.compute() == {}


def test_a_metric_failing_at_runtime_is_skipped_with_the_reason() -> None:
    coll = MetricCollection(["psnr_y_basicsr", "ssim_y_pyiqa"], crop_border=0)
    sr, gt = _batch(3, size=8)  # SSIM needs 11x11
    rows = coll.update(sr, gt, ["a", "b"])
    assert "ssim_y_pyiqa" not in rows[0] and "psnr_y_basicsr" in rows[0]
    assert "11x11" in coll.skipped["ssim_y_pyiqa"]
    assert list(coll.compute()) == ["psnr_y_basicsr"]


def test_quantize_rounds_to_8_bit_levels() -> None:
    x = torch.tensor([0.0, 0.5 / 255, 0.51 / 255, 1.2, -0.1])
    assert torch.equal(quantize_8bit(x) * 255, torch.tensor([0.0, 0.0, 1.0, 255.0, 0.0]))
    assert set(METRICS) == {"psnr_y_basicsr", "ssim_y_basicsr", "psnr_y_pyiqa", "ssim_y_pyiqa", "psnr_rgb", "ssim_rgb",
                            *LEARNED}
