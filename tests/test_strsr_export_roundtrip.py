"""StrSR export round trip: a demo StrSR run (two generator updates) exports its LoRA and adaptive MLP; the
generator-only predict config (configs/demo/predict_strsr_flux2.yaml) loads that export onto the same random base
and restores images exactly as the trained module's own evaluation forward does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")


def test_train_export_predict_gives_the_trained_modules_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from onestep_sr.cli import cli_main
    from onestep_sr.api import Upscaler
    from lightning_modules.strsr_inference import StrSRInference

    monkeypatch.chdir(tmp_path)
    cli = cli_main(["fit", "--config", str(ROOT / "configs/demo/strsr_flux2.yaml"), "--trainer.max_steps", "2",
                    "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false"])
    export = tmp_path / "runs/demo_strsr_flux2/version_0/export"
    assert sorted(p.name for p in export.glob("*.safetensors")) == ["strsr.safetensors", "strsr_mlp.safetensors"]
    trained = cli.model.eval()
    torch.manual_seed(5)
    lq = torch.rand(1, 3, 30, 27)  # x4: 120 x 108, padded to 128 x 112: 2 x 2 tiles of 96 px
    with torch.no_grad():
        ref = trained.infer(lq, 4)

    # the training module's evaluation forward: the mode of the latent, symmetric linear ramps on every tile edge
    up = Upscaler.from_config(ROOT / "configs/demo/predict_strsr_flux2.yaml",
                              overrides={"model.init_args.latents": "mode", "model.init_args.blend": "linear"})
    assert isinstance(up.module, StrSRInference) and up.module.weights == "export"
    assert up.module.generator.lora is None and not any(p.requires_grad for p in up.module.parameters())
    assert not hasattr(up.module, "discriminator") and not hasattr(up.module, "reconstruction")
    sr = up(lq)
    assert sr.shape == ref.shape == (1, 3, 120, 108)
    torch.testing.assert_close(sr, ref, rtol=0, atol=1e-6)
    # the trained adapter matters: two updates at lr 1e-4 from lora_B = 0 move the output by ~4e-4, far above the
    # 1e-6 of the comparison
    with torch.no_grad():
        up.module.generator.set_adapter(None)
        bare = up(lq)
    assert (bare - ref).abs().max().item() > 1e-4


def test_predict_and_test_run_generator_only_on_the_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           demo_exports) -> None:
    """``main.py predict`` and ``main.py test`` with configs/demo/predict_strsr_flux2.yaml on a demo export: x4 PNGs,
    and a reproduction report beside the StrSR-F rows of the paper."""
    from PIL import Image

    from onestep_sr.cli import cli_main

    monkeypatch.chdir(demo_exports(tmp_path))  # the demo StrSR generator's export where the config looks for it
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (13, 9), (200, 80, 40)).save(tmp_path / "photos/a.png")
    config = str(ROOT / "configs/demo/predict_strsr_flux2.yaml")
    quiet = ["--trainer.enable_progress_bar", "false"]
    cli_main(["predict", "--config", config, "--data.predict_dir", "photos", *quiet])
    assert Image.open("runs/demo_predict_strsr_flux2/predict_0/predictions/a.png").size == (52, 36)
    cli_main(["test", "--config", config, "--config", str(ROOT / "configs/demo/test_benchmarks.yaml"),
              "--data.test_sets", "[{name: demo_x4, demo: true, scale: 4, max_images: 1}]", *quiet])
    report = (tmp_path / "runs/demo_predict_strsr_flux2/test_0/eval/test/demo_x4/report.md").read_text()
    assert report.startswith("# demo_x4 x4 (compared as the papers' RealSR): ours vs StrSR-F")
    assert "## StrSR Table 2, row StrSR - F, RealSR, x4" in report  # the row as the paper prints it
    psnr = next(line for line in report.splitlines() if line.startswith("| PSNR ↑ (`psnr_rgb`) |"))
    ours, paper, diff = (float(v) for v in psnr.split("|")[2:5])
    assert paper == 23.77 and diff == pytest.approx(ours - paper, abs=0.011)
