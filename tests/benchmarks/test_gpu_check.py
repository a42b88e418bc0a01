"""``python -m benchmarks.gpu_check --dry-run``: the GPU check's code end to end on the CPU at demo sizes (the dry
run is in the slow set)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import common, gpu_check


def _check_rows(rows: list[dict], tmp_path: Path) -> None:
    for r in rows[:-2]:  # measured beside the prediction
        assert r["measured_s"] > 0 and r["pred_TFLOP"] > 0 and r["pred_peak_GiB"] > 0
        assert math.isfinite(r["pred_s_40%MFU"])
    assert rows[-2]["item"].startswith("degradation") and rows[-2]["pairs_per_s"] > 0
    written = list(tmp_path.glob("gpu_check-dry-*.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["rows"][0]["item"] == rows[0]["item"]


@pytest.mark.slow  # measured and planned steps of every demo model (about a minute here)
def test_dry_run_writes_every_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Training, inference and degradation rows end to end."""
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    rows = gpu_check.main(["--dry-run"])
    items = [r["item"] for r in rows]
    # stage 1 and 2 (a G and a D update each), FLUX.2 G and D, the four Table 3 settings, the degradation
    assert sum(i.startswith("demo stage") for i in items) == 2
    assert {"demo FLUX.2 96 cached G", "demo FLUX.2 96 cached D"} <= set(items)
    assert items[0] == "demo stage1 64 G+D" and rows[0]["paper"].startswith("OMGSR: 21-24 GB")  # training anchor
    infer = [r for r in rows if r["item"].startswith("infer")]
    assert infer[0]["item"] == "infer x4 128->512 (run at 16 px)"
    assert [r["paper_s_H800"] for r in infer] == [0.0596, 0.4201, 0.4296, 2.2848]
    _check_rows(rows, tmp_path)


def test_needs_a_gpu_without_dry_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device"):
        gpu_check.run(dry_run=False)
