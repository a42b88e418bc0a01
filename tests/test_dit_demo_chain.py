"""The DiT twice-upsampling demo chain of the README ("Twice upsampling on DiT"), run as a user types it in an empty
folder: StrSR stage 1 -> DiT stage 2 -> x8 predict; the predictions are exactly 8x their odd-sized inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "demo"


@pytest.mark.slow
def test_dit_stage2_demo_chain(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"a.png": (33, 25), "b.png": (40, 31)}  # (h, w), odd widths
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(inputs / name)
    commands = [
        ["fit", "--config", str(CONFIGS / "strsr_flux2.yaml")],
        ["fit", "--config", str(CONFIGS / "strsr_stage2_flux2.yaml")],
        ["predict", "--config", str(CONFIGS / "predict_strsr2_x8_flux2.yaml"), "--data.predict_dir", str(inputs)],
    ]
    for args in commands:
        done = subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    runs = tmp_path / "runs"
    assert (runs / "demo_strsr_stage2_flux2" / "version_0" / "export" / "stage2.safetensors").is_file()
    out = runs / "demo_predict_strsr2_x8_flux2" / "predict_0" / "predictions"
    for name, (h, w) in sizes.items():
        assert Image.open(out / name).size == (8 * w, 8 * h)
