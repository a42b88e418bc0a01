"""StrSR DiT distillation module end to end on CPU: the real classes of configs/demo/strsr_flux2.yaml (tiny FLUX.2
transformer and VAE, tiny Qwen3-VL, tiny CLIP-ConvNeXt, random VGG16/19), 96 px crops, batch 1.

One alternating run (8 batches = 4 generator updates, FDL from generator update 2, checkpoints every 2 updates) is
shared by most tests: what changed, when each optimizer stepped, when FDL ran, what the checkpoints, the TensorBoard
events and the export hold. A resume from its step-2 checkpoint, a both-per-batch run and a cached-feature run get
their own short runs. The step axis throughout: ``global_step`` = generator updates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
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
from parsed_configs import load_config  # each repository config parsed once per session
from condition_spy import spy_on_cached_features

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo" / "strsr_flux2.yaml"
CONFIG = load_config(DEMO)  # the composed demo config, as the CLI resolves it
GEN = CONFIG["model"]["init_args"]["generator"]["init_args"]
VLM_ARGS = GEN["condition"]["init_args"]
BACKEND = GEN["backend"]["init_args"]
CONVNEXT = CONFIG["model"]["init_args"]["discriminator"]["init_args"]["backbone"]["config"]
FDL_START = 2  # generator updates
MAX_STEPS = 4  # generator updates: 8 alternating batches



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


def trainer(max_steps: int, callbacks: list[L.Callback], logger: Any = False) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=logger, enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, limit_val_batches=0, max_steps=max_steps, callbacks=callbacks,
                     enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks), log_every_n_steps=1)


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
    fit = trainer(MAX_STEPS, [recorder, ckpt, export], logger=TensorBoardLogger(str(root), name="tb"))
    fit.fit(module, datamodule=datamodule())
    return {"module": module, "before": before, "after": state(module), "recorder": recorder, "root": root,
            "trainer": fit}


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


def test_alternating_schedule_d_on_even_and_g_on_odd_batches(alternating) -> None:
    # (global step before the update, batch, network): only the generator update advances the step
    steps = alternating["recorder"].steps
    assert steps == [(i // 2, i, "d" if i % 2 == 0 else "g") for i in range(2 * MAX_STEPS)]


def test_global_step_counts_generator_updates_and_d_updates_separately(alternating) -> None:
    module, steps = alternating["module"], alternating["recorder"].steps
    n_g, n_d = sum(w == "g" for _, _, w in steps), sum(w == "d" for _, _, w in steps)
    assert alternating["trainer"].global_step == n_g == MAX_STEPS  # max_steps = generator updates
    assert module.discriminator_updates == n_d == MAX_STEPS  # and as many D updates: the run ends on a full pair
    last = torch.load(alternating["root"] / "ckpt" / f"epoch=0-step={MAX_STEPS}.ckpt", map_location="cpu",
                      weights_only=False)
    assert last["global_step"] == MAX_STEPS and last["updates"] == {"generator": MAX_STEPS, "discriminator": MAX_STEPS}


def test_fdl_switches_on_at_the_configured_generator_update(alternating) -> None:
    # G updates run at global steps 0, 1, 2, 3; FDL only from update 2 on (after 2 updates, as the released stage 2
    # resumes from checkpoint-40000 with FDL on)
    assert alternating["recorder"].fdl_steps == [s for s in range(MAX_STEPS) if s >= FDL_START] == [2, 3]


def test_tensorboard_scalars_are_over_generator_updates(alternating) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(alternating["trainer"].logger.log_dir, size_guidance={"scalars": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]

    def by_step(tag: str) -> dict[int, set[float]]:
        values: dict[int, set[float]] = {}
        for e in events.Scalars(tag):
            values.setdefault(e.step, set()).add(e.value)
        return values

    # each G/D pair is logged on its generator batch at step = generator updates so far (Lightning's default axis
    # counts batches, 0..7); Lightning re-sends the unchanged values on the next (D) batch, at the same step
    for tag in ("train/g_total", "train/d_total", "train/g_adv", "train/d_adv", "train/d_r1", "train/lpips"):
        assert tag in scalars, tag
        values = by_step(tag)
        assert sorted(values) == list(range(1, MAX_STEPS + 1)) and all(len(v) == 1 for v in values.values()), tag
    assert by_step("train/fdl_active") == {1: {0.0}, 2: {0.0}, 3: {1.0}, 4: {1.0}}
    assert all(e.step <= MAX_STEPS for tag in scalars for e in events.Scalars(tag))


def test_configs_write_the_schedule_in_generator_updates() -> None:
    """The real configs read the paper's numbers (StrSR sec. 4.1: 40,000 steps, then 20,000 with FDL), now meaning
    60,000 G and 60,000 D updates with FDL from update 40,000 on; the demo keeps its 12 generator updates."""
    for run in ("strsr_flux2.yaml", "strsr_zimage.yaml"):
        real = load_config(DEMO.parents[1] / run)
        assert real["trainer"]["max_steps"] == 60000, run
        assert real["model"]["init_args"]["reconstruction"]["init_args"]["start_steps"] == {"fdl": 40000}, run
        assert real["model"]["init_args"]["alternate"] is True and real["model"]["init_args"]["accumulate"] == 1
        assert real["trainer"]["callbacks"][0]["init_args"]["every_n_train_steps"] == 1000  # released: every 1,000
    assert CONFIG["trainer"]["max_steps"] == 12
    assert CONFIG["model"]["init_args"]["reconstruction"]["init_args"]["start_steps"] == {"fdl": 6}


def test_checkpoints_hold_only_lora_mlp_and_heads(alternating) -> None:
    module = alternating["module"]
    ckpts = sorted((alternating["root"] / "ckpt").glob("*.ckpt"))
    assert [p.name for p in ckpts] == [f"epoch=0-step={s}.ckpt" for s in (2, 4)]
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


def test_resume_continues_both_counters_and_the_fdl_switch(alternating, losses) -> None:
    first = alternating["recorder"]
    ckpt = alternating["root"] / "ckpt" / "epoch=0-step=2.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["updates"] == {"generator": 2, "discriminator": 2}
    module, recorder = build_module(losses), Recorder()
    fit = trainer(MAX_STEPS, [recorder])
    fit.fit(module, datamodule=datamodule(), ckpt_path=str(ckpt))
    # the same steps as the uninterrupted run: FDL on at 2 and 3 (not at resume + 2), the D/G order kept
    assert recorder.fdl_steps == first.fdl_steps == [2, 3]
    assert [(s, w) for s, _, w in recorder.steps] == [(s, w) for s, _, w in first.steps[4:]]
    assert fit.global_step == module.discriminator_updates == MAX_STEPS  # 2 restored + 2 new of each


def test_both_updates_every_batch_without_alternation(losses) -> None:
    module, recorder = build_module(losses, fdl_start=10**6, alternate=False), Recorder()
    fit = trainer(2, [recorder])
    fit.fit(module, datamodule=datamodule())  # 2 batches x (G + D)
    assert [(b, w) for _, b, w in recorder.steps] == [(0, "g"), (0, "d"), (1, "g"), (1, "d")]
    assert [s for s, _, _ in recorder.steps] == [0, 1, 1, 2]  # only the G update advances global_step
    assert fit.global_step == module.discriminator_updates == 2
    assert recorder.fdl_steps == []


def test_cached_features_replace_the_vlm(losses, tmp_path, monkeypatch) -> None:
    config = {**CONFIG, "data": {**CONFIG["data"]}}
    cache, written = precompute(config, str(tmp_path / "cache"), dtype="fp32")
    assert written > 0
    module = build_module(losses, fdl_start=10**6)
    mlp_before = state(module.generator.mlp)

    seen, paths = spy_on_cached_features(monkeypatch, module.generator)

    recorder = Recorder()
    trainer(1, [recorder, paths]).fit(module, datamodule=datamodule(feature_cache=str(tmp_path / "cache")))
    assert [w for _, _, w in recorder.steps] == ["d", "g"]
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
    sr = module.generator.eval()(torch.rand(1, 3, 32, 32), None, cond_features=torch.randn(1, 5, 24))  # (1,3,32,32)
    assert sr.shape == (1, 3, 32, 32) and 0 <= sr.min() and sr.max() <= 1  # evaluation output: clamped
    with pytest.raises(FileNotFoundError, match="datamodules.precompute"):
        datamodule(feature_cache=str(tmp_path / "none")).setup("fit")
    with pytest.raises(ValueError, match="width 7 but the generator's condition expects 24"):
        module.cond_features({"cond_features": torch.randn(1, 5, 7)})
    with pytest.raises(RuntimeError, match="cache-only"):
        module.infer(torch.rand(1, 3, 8, 8), 4)
