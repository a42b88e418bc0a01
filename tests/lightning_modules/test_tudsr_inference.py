"""TUDSRInference: it builds its TUDSRPipeline around the generator, loads the exported adapter files into the
pipeline's adapter names, equals the pipeline run by hand, restores at the pipeline's scale and names both scales (or
the missing file) when the settings disagree. Tiny random SD (CPU)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch

from lightning_modules.tudsr_inference import TUDSRInference
from models.generators import OneStepSDGenerator
from models.inference import TUDSRPipeline
from models.lora import LoraConfig, adapter_named_parameters
from models.pretrained import Source

VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
           up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 16], layers_per_block=1,
           latent_channels=4, norm_num_groups=4, sample_size=32)
UNET = dict(sample_size=8, in_channels=4, out_channels=4, down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], block_out_channels=[16, 32], layers_per_block=1,
            cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8, use_linear_projection=True)
SCHED = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
             prediction_type="epsilon", clip_sample=False)
TILING = dict(latent_tile=None, vae_tile=None, color_fix="none")


def _generator() -> OneStepSDGenerator:
    torch.manual_seed(0)
    return OneStepSDGenerator(vae=Source(config=VAE), unet=Source(config=UNET), scheduler=Source(config=SCHED))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two exported adapters with random (non-identity) LoRA B."""
    gen = _generator()
    g = torch.Generator().manual_seed(1)
    for name in ("stage1", "stage2"):
        gen.add_adapter(name, LoraConfig(rank=4), trainable=False)
        with torch.no_grad():
            for pname, p in adapter_named_parameters(gen.unet, name):
                if "lora_B" in pname:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    root = tmp_path_factory.mktemp("adapters")
    return gen.export_adapter(root / "s1.safetensors", "stage1"), gen.export_adapter(root / "s2.safetensors", "stage2")


def test_loads_the_files_into_the_pipeline_names_and_equals_the_pipeline(files: tuple[Path, Path]) -> None:
    f1, f2 = files
    module = TUDSRInference(_generator(), adapter1=str(f1), adapter2=str(f2),
                            pipeline=partial(TUDSRPipeline, adapter1="a", adapter2="b", m=2, n=2, **TILING))
    assert isinstance(module.pipeline, TUDSRPipeline) and module.pipeline.generator is module.generator
    assert module.generator.adapters == ["a", "b"] and module.native_scale == 4
    assert not any(p.requires_grad for p in module.generator.parameters())
    reference = _generator()
    reference.load_adapter(f1, "stage1")  # by hand, under other names
    reference.load_adapter(f2, "stage2")
    lq = torch.rand(1, 3, 8, 12, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = TUDSRPipeline(reference, m=2, n=2, **TILING).eval()(lq)
        out = module.predict_step({"lq": lq, "name": ["x"]}, 0)["sr"]  # no scale in the batch: the native x4
    assert out.shape == (1, 3, 32, 48) and torch.equal(out, expected.clamp(0, 1))
    with pytest.raises(ValueError, match=r"asks for x8, but this TUDSR pipeline produces x4 \(M2N2\)"):
        module.test_step({"lq": lq, "name": ["x"], "scale": torch.tensor([8])}, 0)
    assert module.test_step({"lq": lq, "name": ["x"], "scale": torch.tensor([4])}, 0)["sr"].shape == (1, 3, 32, 48)


def test_stage_one_only_and_dtype(files: tuple[Path, Path]) -> None:
    f1, _ = files
    module = TUDSRInference(_generator(), str(f1), pipeline=partial(TUDSRPipeline, adapter2=None, m=4, dtype="bf16",
                                                                    **TILING))
    assert module.pipeline.dtype == torch.bfloat16
    assert module.generator.adapters == ["stage1"] and module.native_scale == 4


def test_adapter_settings_that_disagree_fail_before_loading(files: tuple[Path, Path]) -> None:
    f1, f2 = files
    generator = _generator()
    with pytest.raises(ValueError, match="pipeline.adapter2 is 'stage2' .* no adapter2 file"):
        TUDSRInference(generator, str(f1))  # the default pipeline runs two stages
    assert generator.adapters == []  # nothing was loaded
    with pytest.raises(ValueError, match="adapter2 file is given .* pipeline.adapter2 is null"):
        TUDSRInference(_generator(), str(f1), str(f2), pipeline=partial(TUDSRPipeline, adapter2=None))
    with pytest.raises(ValueError, match="into pipeline.adapter1, which is null"):
        TUDSRInference(_generator(), str(f1), pipeline=partial(TUDSRPipeline, adapter1=None, adapter2=None))


@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")
def test_channels_last_switch_keeps_the_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               demo_exports) -> None:
    """The inference speed switch changes the memory layout, not the result (configs/demo/predict_x4.yaml)."""
    from onestep_sr.cli import cli_main

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(demo_exports(tmp_path))  # the config's relative adapter paths: the demo chain's exports
    base = ["--config", str(root / "configs/demo/predict_x4.yaml")]
    outputs = []
    for flag in ("false", "true"):
        cli = cli_main(base + ["--model.init_args.channels_last", flag], run=False)
        torch.manual_seed(0)
        lq = torch.rand(1, 3, 24, 20)
        with torch.inference_mode():
            outputs.append(cli.model(lq))
    assert outputs[0].shape == (1, 3, 96, 80)
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-4, rtol=1e-4)
