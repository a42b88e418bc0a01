"""TUDSR stage 2 (Algorithm 2) on StrSR's one-step DiT, CPU, the tiny classes of configs/demo/strsr_flux2.yaml.

GT crops of 64 with N = 2, R = 32, M = 2 (x4 LQ of 16): the stage-1 pass runs at 32 with the frozen StrSR adapter
and MLP, the stage-2 adapter trains on 4 chunks of 32 with the VLM condition of the whole LR shared by the chunks.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from datamodules import SRDataModule
from datamodules.degradation import RealESRGANDegradation
from datamodules.precompute import precompute
from lightning_modules.dit_stage2 import DiTStage2Module
from lightning_modules.tudsr_inference import TUDSRInference
from losses.adversarial import RaGAN
from losses.pixel import L1
from losses.weighted import WeightedLoss
from models.conditions import VLMCondition
from models.discriminators.multilevel import CLIPConvNeXtDiscriminator
from models.generators.dit_onestep import OneStepDiTGenerator
from models.generators.flux2_backend import Flux2Backend
from models.inference.tudsr import TUDSRPipeline
from models.lora import LoraConfig
from models.pretrained import Source
from models.resize import bicubic_upsample
from parsed_configs import load_config  # each repository config parsed once per session
from condition_spy import spy_on_cached_features

CONFIG = load_config(Path(__file__).resolve().parents[2] / "configs" / "demo" / "strsr_flux2.yaml")
GEN = CONFIG["model"]["init_args"]["generator"]["init_args"]
VLM_ARGS, BACKEND = GEN["condition"]["init_args"], GEN["backend"]["init_args"]
CONVNEXT = CONFIG["model"]["init_args"]["discriminator"]["init_args"]["backbone"]["config"]
CROP, N, R = 64, 2, 32
CHUNKS = (CROP // R) ** 2


def build_generator(adapter: str | None, sigma: float) -> OneStepDiTGenerator:
    torch.manual_seed(0)  # same frozen backbone, VLM and initial MLP in every generator
    backend = Flux2Backend(Source(config=BACKEND["transformer"]["config"]), Source(config=BACKEND["vae"]["config"]),
                           "fp32")
    condition = VLMCondition(Source(config=VLM_ARGS["vlm"]["config"]),
                             **{k: v for k, v in VLM_ARGS.items() if k != "vlm"})
    lora = LoraConfig(rank=4, alpha=4, init="gaussian") if adapter is not None else None
    return OneStepDiTGenerator(backend, condition, sigma=sigma, lora=lora, adapter_name=adapter or "strsr")


@pytest.fixture(scope="module")
def stage1(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A stage-1 StrSR generator with a non-zero LoRA and a perturbed MLP, exported."""
    gen = build_generator("strsr", 0.8)
    torch.manual_seed(1)
    with torch.no_grad():
        for _, p in gen.trainable_named_parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("stage1") / "strsr.safetensors"
    gen.export_adapter(path)
    return SimpleNamespace(path=path, state={n: p.detach().clone() for n, p in gen.trainable_named_parameters()})


def build_module(stage1_path: Path, **kwargs: Any) -> DiTStage2Module:
    generator = build_generator("stage2", 0.6)
    torch.manual_seed(0)
    discriminator = CLIPConvNeXtDiscriminator(Source(config=CONVNEXT), stages=[0, 1], pooled=True, head_width=16)
    return DiTStage2Module(generator, discriminator, WeightedLoss({"l1": L1()}, {"l1": 1.0}), RaGAN(),
                           stage1_adapter=str(stage1_path), stage1_name="stage1", sigma1=0.8, m=2, n=N, chunk=R,
                           optimizer_g=lambda p: torch.optim.AdamW(p, lr=1e-3),
                           optimizer_d=lambda p: torch.optim.AdamW(p, lr=1e-3), **kwargs)


class StepRecorder(L.Callback):
    """Which network stepped, the gradients it applied, the first batch and the state before it."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.grads: dict[str, list[torch.Tensor]] = {"g": [], "d": []}
        self.batch: dict[str, Any] | None = None
        self.state_before: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer: L.Trainer, module: DiTStage2Module) -> None:
        params = {"g": module.generator_parameters(), "d": module.discriminator_parameters()}
        for which, opt in zip("gd", trainer.optimizers):
            original = opt.step

            def step(*args: Any, _original=original, _which=which, **kwargs: Any) -> Any:
                self.steps.append(_which)
                self.grads[_which] = [p.grad.detach().clone() for p in params[_which]]
                return _original(*args, **kwargs)

            opt.step = step

    def on_train_batch_start(self, trainer: L.Trainer, module: DiTStage2Module, batch: Any, batch_idx: int) -> None:
        if self.batch is None:
            self.batch = {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()}
            self.state_before = {k: v.detach().clone() for k, v in module.state_dict().items()}


def fit(module: DiTStage2Module, max_steps: int, recorder: StepRecorder) -> L.Trainer:
    data = SRDataModule(train_dirs=None, crop_size=CROP, batch_size=1, num_workers=0, epoch_length=4,
                        degradation=RealESRGANDegradation(preset="light", scale=4, resize_back=False))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                        limit_val_batches=0, max_steps=max_steps, callbacks=[recorder])
    trainer.fit(module, datamodule=data)
    return trainer


@pytest.fixture(scope="module")
def run(stage1: SimpleNamespace) -> SimpleNamespace:
    module = build_module(stage1.path)
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    recorder = StepRecorder()
    trainer = fit(module, CHUNKS, recorder)
    return SimpleNamespace(module=module, before=before, trainer=trainer, steps=recorder.steps)


def test_n_squared_g_and_d_updates_per_image(run: SimpleNamespace) -> None:
    assert run.steps == ["g", "d"] * CHUNKS  # one image: per chunk a G update then a D update
    assert run.trainer.global_step == CHUNKS and run.module.discriminator_updates == CHUNKS


def test_stage1_adapter_and_mlp_bit_identical_stage2_lora_trained(run: SimpleNamespace, stage1) -> None:
    after = run.module.state_dict()
    s1 = [k for k in after if ".lora_" in k and ".stage1." in k]
    s2 = [k for k in after if ".lora_" in k and ".stage2." in k]
    mlp = [k for k in after if k.startswith("generator.mlp.")]
    assert s1 and s2 and mlp
    assert all(torch.equal(run.before[k], after[k]) for k in s1 + mlp)
    assert all(torch.equal(after[f"generator.{k}"], v) for k, v in stage1.state.items() if k.startswith("mlp."))
    assert any(not torch.equal(run.before[k], after[k]) for k in s2)
    assert not any(n.startswith("generator.mlp.") for n in run.module.trainable_names())
    frozen = [k for k in after if k.startswith("generator.backend.") and "lora_" not in k]
    assert all(torch.equal(run.before[k], after[k]) for k in frozen)


def test_two_adapter_inference_equals_two_single_adapter_generators(run: SimpleNamespace, stage1, tmp_path) -> None:
    """The generator-only path of configs/predict_strsr2_* (TUDSRInference + TUDSRPipeline around a DiT generator
    without a trainable adapter) and the training module's evaluation both equal two single-adapter generators."""
    module = run.module
    module.generator.export_adapter(tmp_path / "stage2.safetensors")  # stage-2 LoRA + the shared (stage-1) MLP
    g1, g2 = build_generator(None, 0.8), build_generator(None, 0.6)
    g1.load_adapter(stage1.path, "a1")
    g2.load_adapter(tmp_path / "stage2.safetensors", "a2")
    g1.eval(), g2.eval()
    torch.manual_seed(3)
    lq = torch.rand(1, 3, 9, 7)  # odd sizes
    settings = dict(m=4, n=2, t1=0.8, t2=0.6, color_fix="none")
    untiled = TUDSRInference(build_generator(None, 0.3), str(stage1.path), str(tmp_path / "stage2.safetensors"),
                             pipeline=partial(TUDSRPipeline, pixel_tile=1024, **settings))
    tiled = TUDSRInference(build_generator(None, 0.3), str(stage1.path), str(tmp_path / "stage2.safetensors"),
                           pipeline=partial(TUDSRPipeline, pixel_tile=32, pixel_overlap=8, **settings))
    assert untiled.generator.adapters == ["stage1", "stage2"] and untiled.native_scale == 8
    assert not any(p.requires_grad for p in untiled.parameters())
    with torch.no_grad():
        got = untiled.predict_step({"lq": lq, "name": ["x"]}, 0)["sr"]  # native x8 = M4N2
        y1 = g1(bicubic_upsample(lq, (36, 28)), lq)
        x2 = F.interpolate(y1, size=(72, 56), mode="bilinear", align_corners=False).clamp(0, 1)
        want = g2(x2, lq)
        # pixel tiles of 32 (overlap 8): each single generator tiles with the condition of the whole LR
        got_tiled = tiled.predict_step({"lq": lq, "name": ["x"]}, 0)["sr"]
        y1_t = g1.tiled_forward(bicubic_upsample(lq, (36, 28)), lq, tile=32, overlap=8)
        x2_t = F.interpolate(y1_t, size=(72, 56), mode="bilinear", align_corners=False).clamp(0, 1)
        want_tiled = g2.tiled_forward(x2_t, lq, tile=32, overlap=8)
        trained = module.infer(lq, 8)  # the training module's evaluation: the same pipeline
    assert got.shape == got_tiled.shape == (1, 3, 72, 56)  # exactly 8x the input
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_tiled, want_tiled, atol=1e-5, rtol=0)
    assert (got_tiled - got).abs().max() > 1e-4  # the tiles did run (otherwise the check above repeats the first)
    torch.testing.assert_close(trained, want, atol=1e-5, rtol=0)
    assert module.generator.active_adapter == "stage2" and module.generator.sigma == 0.6


def test_infer_x4_and_x8_sizes(run: SimpleNamespace) -> None:
    lq = torch.rand(1, 3, 5, 11)
    with torch.no_grad():
        assert run.module.infer(lq, 8).shape == (1, 3, 40, 88)
        assert run.module.infer(lq, 4).shape == (1, 3, 20, 44)
    with pytest.raises(ValueError):
        run.module.infer(lq, 3)


def test_accumulated_chunks_equal_one_graph(stage1: SimpleNamespace) -> None:
    """per_chunk_step=False: the gradients of the single step equal those of the N^2 chunk losses summed in one
    graph, each chunk conditioned on the one condition of the whole LR (posterior mode, so the passes repeat)."""
    module = build_module(stage1.path, per_chunk_step=False, grad_clip=None)
    module.generator.sample_latents = False
    recorder = StepRecorder()
    trainer = fit(module, 1, recorder)
    assert recorder.steps == ["g", "d"] and trainer.global_step == 1

    module.load_state_dict(recorder.state_before)
    module.train()
    for p in module.generator_parameters() + module.discriminator_parameters():
        p.grad = None
    gt, lq = recorder.batch["gt"], recorder.batch["lq"]  # (1, 3, 64, 64), (1, 3, 16, 16)
    with torch.no_grad():
        cond = module.generator.encode_condition(lq, 1)  # (1, L, text_dim), frozen VLM + MLP
        m = module.stage1_output(lq, (CROP // N, CROP // N), cond)  # (1, 3, 32, 32)
        y_l = F.interpolate(m, scale_factor=N, mode="bilinear", align_corners=False).clamp(0, 1)
    g_total, d_total = torch.zeros(()), torch.zeros(())
    for top in range(0, CROP, R):
        for left in range(0, CROP, R):
            y_l_i, gt_i = (x[..., top:top + R, left:left + R] for x in (y_l, gt))
            sr_i = module.generator.restore(y_l_i.contiguous(), cond)  # stage-2 adapter at sigma 0.6
            g_total = g_total + module.generator_loss(sr_i, gt_i)[0]
            d_total = d_total + module.discriminator_loss(sr_i, gt_i)[0]
    g_total.backward()
    d_total.backward()
    for which, params in (("g", module.generator_parameters()), ("d", module.discriminator_parameters())):
        got, want = recorder.grads[which], [p.grad for p in params]
        assert len(got) == len(want) and all(w is not None for w in want)
        flat_got, flat_want = torch.cat([g.flatten() for g in got]), torch.cat([w.flatten() for w in want])
        assert flat_want.abs().max() > 0
        torch.testing.assert_close(flat_got, flat_want, rtol=1e-4, atol=1e-6 * float(flat_want.abs().max()))


def test_stage1_pass_uses_frozen_adapter_at_sigma1(run: SimpleNamespace, stage1: SimpleNamespace) -> None:
    g1 = build_generator(None, 0.8)
    g1.load_adapter(stage1.path, "a1")
    g1.eval()
    module = run.module
    module.eval()
    lq = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        got = module.stage1_output(lq, (32, 32))
        want = g1(bicubic_upsample(lq, (32, 32)), lq)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_feature_cache_replaces_the_vlm_in_stage2(stage1: SimpleNamespace, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """SRDataModule(feature_cache=...) puts the cached VLM features (``cond_features``) into the batches; DiT stage 2
    maps them once per image through the frozen MLP and never runs the VLM."""
    cache, written = precompute({**CONFIG, "data": {**CONFIG["data"], "crop_size": CROP}}, str(tmp_path / "cache"),
                                dtype="fp32")
    assert written > 0
    module = build_module(stage1.path)

    seen, paths = spy_on_cached_features(monkeypatch, module.generator)

    recorder = StepRecorder()
    data = SRDataModule(train_dirs=None, crop_size=CROP, batch_size=1, num_workers=0, epoch_length=4,
                        feature_cache=str(tmp_path / "cache"),
                        degradation=RealESRGANDegradation(preset="light", scale=4, resize_back=False))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                        limit_val_batches=0, max_steps=CHUNKS, callbacks=[recorder, paths])
    trainer.fit(module, datamodule=data)
    assert recorder.steps == ["g", "d"] * CHUNKS
    assert len(seen) == 1  # one condition per image, shared by the stage-1 pass and the N^2 chunks
    ids, features = seen[0]
    assert features is not None and torch.equal(features, torch.stack([cache.load(i) for i in ids]))
