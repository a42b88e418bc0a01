"""The DiT twice-upsampling demo chains of the README ("Twice upsampling on DiT"), run as a user types them in an
empty folder: StrSR stage 1 -> DiT stage 2 -> x8 (and x4) predict, on the tiny FLUX.2 and Z-Image DiTs; the
predictions are exactly 8x (4x) their odd-sized inputs. The fast test builds the generator-only x4 demo predict
module (no discriminator, no loss networks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_modules.tudsr_inference import TUDSRInference
from models.generators.dit_onestep import OneStepDiTGenerator
from models.inference.tudsr import TUDSRPipeline
from onestep_sr.cli import cli_main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "demo"
TRAINING_PARTS = ("Discriminator", "VGG", "LPIPS", "FDL", "DISTS", "ConvNeXt", "DINOv3")  # class names


@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")
def test_x4_demo_predict_is_generator_only_and_exactly_4x(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        demo_exports) -> None:
    # the config's relative adapter paths: the demo chain's two exports (from the demo StrSR generator)
    monkeypatch.chdir(demo_exports(tmp_path))
    model = cli_main(["--config", str(CONFIGS / "predict_strsr2_x4_flux2.yaml")], run=False).model
    assert type(model) is TUDSRInference and [name for name, _ in model.named_children()] == ["pipeline"]
    assert type(model.pipeline) is TUDSRPipeline and type(model.generator) is OneStepDiTGenerator
    built = {f"{type(m).__module__}.{type(m).__name__}" for m in model.modules()}
    training_parts = {name for name in built if name.startswith(("losses.", "models.discriminators.", "torchvision."))
                      or any(part in name for part in TRAINING_PARTS)}
    assert not training_parts and "models.conditions.vlm.VLMCondition" in built, training_parts
    assert model.generator.adapters == ["stage1", "stage2"] and model.native_scale == 4
    assert (model.pipeline.t1, model.pipeline.t2) == (0.8, 0.6)
    assert not any(p.requires_grad for p in model.parameters())
    lq = torch.rand(1, 3, 13, 9)  # odd sizes
    out = model.predict_step({"lq": lq, "name": ["x"]}, 0)["sr"]
    assert out.shape == (1, 3, 52, 36) and 0 <= out.min() and out.max() <= 1
    with pytest.raises(ValueError, match=r"asks for x8, but this TUDSR pipeline produces x4 \(M2N2\)"):
        model.predict_step({"lq": lq, "name": ["x"], "scale": torch.tensor([8])}, 0)


@pytest.mark.slow
@pytest.mark.parametrize("backend, scales", [("flux2", (8, 4)), ("zimage", (8, 4))])
def test_dit_stage2_demo_chain(tmp_path: Path, backend: str, scales: tuple[int, ...]) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"a.png": (33, 25), "b.png": (40, 31)}  # (h, w), odd widths
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(inputs / name)
    commands = [
        ["fit", "--config", str(CONFIGS / f"strsr_{backend}.yaml")],
        ["fit", "--config", str(CONFIGS / f"strsr_stage2_{backend}.yaml")],
    ] + [["predict", "--config", str(CONFIGS / f"predict_strsr2_x{s}_{backend}.yaml"),
          "--data.predict_dir", str(inputs)] for s in scales]
    for args in commands:
        done = subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    runs = tmp_path / "runs"
    assert (runs / f"demo_strsr_stage2_{backend}" / "version_0" / "export" / "stage2.safetensors").is_file()
    for s in scales:
        out = runs / f"demo_predict_strsr2_x{s}_{backend}" / "predict_0" / "predictions"
        for name, (h, w) in sizes.items():
            assert Image.open(out / name).size == (s * w, s * h)
