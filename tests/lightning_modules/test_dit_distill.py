"""StrSR DiT distillation module end to end on CPU: the real classes of configs/demo/strsr_flux2.yaml (tiny FLUX.2
transformer and VAE, tiny Qwen3-VL, tiny CLIP-ConvNeXt, random VGG16/19), 96 px crops, batch 1.

One alternating run (8 batches, FDL from global step 3, checkpoints every 2 steps) is shared by most tests: what
changed, when each optimizer stepped, when FDL ran, what the checkpoints and the export hold. A resume from its
step-2 checkpoint, a both-per-batch run and a cached-feature run get their own short runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import load_file

from callbacks.adapter_export import AdapterExport
from datamodules import SRDataModule
from datamodules.degradation import RealESRGANDegradation
from lightning_modules.dit_distill import DiTDistillModule
from losses.adversarial import RaGAN
from losses.pixel import L1
from losses.r1 import ApproxR1
from losses.weighted import WeightedLoss
from datamodules.precompute import precompute
from models.conditions import VLMCondition
from models.discriminators.multilevel import CLIPConvNeXtDiscriminator
from models.generators.dit_onestep import OneStepDiTGenerator
from models.generators.flux2_backend import Flux2Backend
from models.lora import LoraConfig
from models.pretrained import Source
from onestep_sr.config import load_config

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo" / "strsr_flux2.yaml"
CONFIG = load_config(DEMO)  # the composed demo config, as the CLI resolves it
GEN = CONFIG["model"]["init_args"]["generator"]["init_args"]
VLM_ARGS = GEN["condition"]["init_args"]
BACKEND = GEN["backend"]["init_args"]
CONVNEXT = CONFIG["model"]["init_args"]["discriminator"]["init_args"]["backbone"]["config"]
FDL_START = 3
MAX_STEPS = 8



@pytest.fixture(scope="module")
def losses(narrow_perceptual: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Module]:
    """Frozen narrow random-VGG perceptual terms (the session's, see conftest), shared by every module of this file
    (they own no trainable state)."""
    torch.manual_seed(0)
    return {"l1": L1(), **narrow_perceptual}


def vlm_condition() -> VLMCondition:
    args = {k: v for k, v in VLM_ARGS.items() if k != "vlm"}
    return VLMCondition(Source(config=VLM_ARGS["vlm"]["config"]), **args)


def build_module(losses: dict[str, torch.nn.Module], condition: VLMCondition | None = None, fdl_start: int = FDL_START,
                 **kwargs: Any) -> DiTDistillModule:
    torch.manual_seed(0)
    generator = OneStepDiTGenerator(
        Flux2Backend(Source(config=BACKEND["transformer"]["config"]), Source(config=BACKEND["vae"]["config"]), "fp32"),
        condition if condition is not None else vlm_condition(), sigma=0.8,
        lora=LoraConfig(rank=4, alpha=4, init="gaussian"), adapter_name="strsr")
    discriminator = CLIPConvNeXtDiscriminator(Source(config=CONVNEXT), stages=[0, 1, 2], pooled=True, head_width=16)
    reconstruction = WeightedLoss(dict(losses), {"l1": 1.0, "lpips": 3.0, "fdl": 0.002}, {"fdl": fdl_start})
    return DiTDistillModule(generator, discriminator, reconstruction, RaGAN(), r1=ApproxR1(10.0, "uniform", 0.005),
                            optimizer_g=lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01),
                            optimizer_d=lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01), **kwargs)


def datamodule(**kwargs: Any) -> SRDataModule:
    return SRDataModule(train_dirs=None, crop_size=96, batch_size=1, num_workers=0, epoch_length=16,
                        degradation=RealESRGANDegradation(preset="light", scale=4, resize_back=True, sharpen_gt=True),
                        **kwargs)


def trainer(max_steps: int, callbacks: list[L.Callback]) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, limit_val_batches=0, max_steps=max_steps, callbacks=callbacks,
                     enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks))


class Recorder(L.Callback):
    """Records every optimizer step as (global step before it, batch_idx, "g"|"d") and every FDL forward call as the
    global step it ran at."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, int, str]] = []
        self.fdl_steps: list[int] = []
        self.batch_idx = -1

    def on_train_start(self, trainer: L.Trainer, module: DiTDistillModule) -> None:
        for which, opt in zip("gd", trainer.optimizers):
            original = opt.step

            def step(*args: Any, _original=original, _which=which, **kwargs: Any) -> Any:
                self.steps.append((trainer.global_step, self.batch_idx, _which))
                return _original(*args, **kwargs)

            opt.step = step
        fdl = module.reconstruction.terms["fdl"]
        forward = type(fdl).forward

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.fdl_steps.append(trainer.global_step)
            return forward(fdl, *args, **kwargs)

        fdl.forward = counting  # instance attribute, removed at the end of the run

    def on_train_end(self, trainer: L.Trainer, module: DiTDistillModule) -> None:
        del module.reconstruction.terms["fdl"].forward

    def on_train_batch_start(self, trainer: L.Trainer, module: DiTDistillModule, batch: Any, batch_idx: int) -> None:
        self.batch_idx = batch_idx


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def alternating(losses, tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("alternating")
    module = build_module(losses)
    before = state(module)
    recorder = Recorder()
    ckpt = ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=2, save_top_k=-1)
    export = AdapterExport(dirpath=str(root / "export"), filename="strsr")
    trainer(MAX_STEPS, [recorder, ckpt, export]).fit(module, datamodule=datamodule())
    return {"module": module, "before": before, "after": state(module), "recorder": recorder, "root": root}


def test_only_lora_mlp_and_heads_change(alternating) -> None:
    module, before, after = alternating["module"], alternating["before"], alternating["after"]
    trainable = module.trainable_names()
    assert any(".lora_A." in n for n in trainable) and any(n.startswith("generator.mlp.") for n in trainable)
    assert any(n.startswith("discriminator.heads.") for n in trainable)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert trainable <= changed  # every LoRA (A and B), MLP and head parameter moved
    # besides them only the heads' spectral-norm power-iteration vectors may change
    assert {k for k in changed - trainable if not k.startswith("discriminator.heads.")} == set()
    frozen = {
        "transformer base": [k for k in before if k.startswith("generator.backend.transformer.") and "lora_" not in k],
        "VAE": [k for k in before if k.startswith("generator.backend.vae.")],
        "VLM": [k for k in before if k.startswith("generator.condition.vlm.")],
        "ConvNeXt": [k for k in before if k.startswith("discriminator.backbone.")],
        "LPIPS/FDL VGG": [k for k in before if k.startswith("reconstruction.")],
    }
    for part, keys in frozen.items():
        assert keys, part
        assert all(torch.equal(before[k], after[k]) for k in keys), part  # byte-identical


def test_alternating_schedule_steps_g_on_even_and_d_on_odd_batches(alternating) -> None:
    steps = alternating["recorder"].steps
    assert steps == [(i, i, "g" if i % 2 == 0 else "d") for i in range(MAX_STEPS)]


def test_fdl_switches_on_at_the_configured_global_step(alternating) -> None:
    # G batches run at global steps 0, 2, 4, 6; FDL only from step 3 on
    assert alternating["recorder"].fdl_steps == [s for s in range(0, MAX_STEPS, 2) if s >= FDL_START] == [4, 6]


def test_checkpoints_hold_only_lora_mlp_and_heads(alternating) -> None:
    module = alternating["module"]
    ckpts = sorted((alternating["root"] / "ckpt").glob("*.ckpt"))
    assert [p.name for p in ckpts] == [f"epoch=0-step={s}.ckpt" for s in (2, 4, 6, 8)]
    keys = set(torch.load(ckpts[-1], map_location="cpu", weights_only=False)["state_dict"])
    assert module.trainable_names() <= keys
    owners = {n.rsplit(".", 1)[0] for n in module.trainable_names()}
    assert all(k.rsplit(".", 1)[0] in owners for k in keys)  # only parameters/buffers of LoRA, MLP and heads
    for part in ("vae.", "condition.", "backbone.", "reconstruction.", "base_layer"):
        assert not any(part in k for k in keys), part


def test_adapter_export_writes_lora_and_mlp(alternating) -> None:
    module, export = alternating["module"], alternating["root"] / "export"
    lora, mlp = load_file(str(export / "strsr.safetensors")), load_file(str(export / "strsr_mlp.safetensors"))
    n_lora = sum(1 for n, _ in module.generator.trainable_named_parameters() if ".lora_" in n)
    assert len(lora) == n_lora and all("lora_A" in k or "lora_B" in k for k in lora)
    final_mlp = module.generator.mlp.state_dict()
    assert mlp.keys() == final_mlp.keys() and all(torch.equal(mlp[k], final_mlp[k]) for k in mlp)
    b_final = {n.split("backend.transformer.", 1)[1].replace(".strsr", ""): p
               for n, p in module.generator.trainable_named_parameters() if ".lora_B." in n}
    for name, p in b_final.items():  # exported values are the trained ones (peft names drop the adapter name)
        match = [k for k in lora if k.endswith(name)]
        assert len(match) == 1 and torch.equal(lora[match[0]], p.detach()), name


def test_fdl_switch_survives_resume(alternating, losses) -> None:
    first = alternating["recorder"]
    ckpt = alternating["root"] / "ckpt" / "epoch=0-step=2.ckpt"
    module, recorder = build_module(losses), Recorder()
    trainer(MAX_STEPS, [recorder]).fit(module, datamodule=datamodule(), ckpt_path=str(ckpt))
    # the same global steps as the uninterrupted run: FDL on at 4 and 6 (not at resume + 3), G/D parity kept
    assert recorder.fdl_steps == first.fdl_steps == [4, 6]
    assert [(s, w) for s, _, w in recorder.steps] == [(s, w) for s, _, w in first.steps[2:]]


def test_both_updates_every_batch_without_alternation(losses) -> None:
    module, recorder = build_module(losses, fdl_start=10**6, alternate=False), Recorder()
    trainer(4, [recorder]).fit(module, datamodule=datamodule())  # 2 batches x (G + D)
    assert [(b, w) for _, b, w in recorder.steps] == [(0, "g"), (0, "d"), (1, "g"), (1, "d")]
    assert recorder.fdl_steps == []


def test_cached_features_replace_the_vlm(losses, tmp_path, monkeypatch) -> None:
    config = {**CONFIG, "data": {**CONFIG["data"]}}
    cache, written = precompute(config, str(tmp_path / "cache"), dtype="fp32")
    assert written > 0
    module = build_module(losses, fdl_start=10**6)
    mlp_before = state(module.generator.mlp)

    def no_vlm(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the VLM ran although features are cached")

    monkeypatch.setattr(VLMCondition, "forward", no_vlm)
    paths: list[list[str]] = []  # of each training batch
    seen: list[tuple[list[str], torch.Tensor]] = []  # (batch paths, features the generator was given)
    encode = module.generator.encode_condition

    def spy(lq: Any, batch_size: int, cond_features: torch.Tensor | None = None) -> torch.Tensor:
        seen.append((list(paths[-1]), cond_features))
        return encode(lq, batch_size, cond_features)

    monkeypatch.setattr(module.generator, "encode_condition", spy)

    class Paths(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, module: Any, batch: Any, batch_idx: int) -> None:
            paths.append(batch["path"])

    recorder = Recorder()
    trainer(2, [recorder, Paths()]).fit(module, datamodule=datamodule(feature_cache=str(tmp_path / "cache")))
    assert [w for _, _, w in recorder.steps] == ["g", "d"]
    assert any(not torch.equal(mlp_before[k], v) for k, v in module.generator.mlp.state_dict().items())
    # the features of a batch are the cached ones, on the module's device
    assert len(seen) == 2
    for ids, features in seen:
        expected = torch.stack([cache.load(i) for i in ids])
        assert features.device == module.device and torch.equal(features, expected)
    with pytest.raises(KeyError, match=r"'/data/unseen\.png'.*python -m datamodules\.precompute"):
        cache.load("/data/unseen.png")


def test_cache_only_condition_needs_no_vlm(losses, tmp_path) -> None:
    module = build_module(losses, condition=VLMCondition(None, feature_dim=24))
    assert module.generator.condition.vlm is None and module.generator.mlp.in_dim == 24
    sr = module.generator(torch.rand(1, 3, 32, 32), None, cond_features=torch.randn(1, 5, 24))  # (1, 3, 32, 32)
    assert sr.shape == (1, 3, 32, 32) and 0 <= sr.min() and sr.max() <= 1
    with pytest.raises(FileNotFoundError, match="datamodules.precompute"):
        datamodule(feature_cache=str(tmp_path / "none")).setup("fit")
    with pytest.raises(ValueError, match="width 7 but the generator's condition expects 24"):
        module.cond_features({"cond_features": torch.randn(1, 5, 7)})
    with pytest.raises(RuntimeError, match="cache-only"):
        module.infer(torch.rand(1, 3, 8, 8), 4)
