"""TUDSR stage 1 (Algorithm 1) end to end on CPU with the real classes built from tiny architecture configs.

One short training run (4 batches, accumulation 2) is shared by most tests: what changed, when the optimizers
stepped, what the checkpoint holds, what the callbacks wrote. Resuming and the non-finite guard get their own runs.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from callbacks.adapter_export import AdapterExport
from callbacks.image_logger import ImageLogger
from datamodules import SRDataModule
from datamodules.degradation import RealESRGANDegradation
from lightning_modules.stage1 import Stage1Module
from losses.adversarial import SoftLabelBCE
from losses.dists import DISTS
from losses.edges import EdgeAwareDISTS
from losses.pixel import MAE
from losses.weighted import WeightedLoss
from models.discriminators.multilevel import DINOv3Discriminator
from models.generators.sd_onestep import OneStepSDGenerator
from models.lora import LoraConfig
from models.pretrained import Source
from parsed_configs import load_config  # each repository config parsed once per session

# The tiny architectures of configs/demo/stage1.yaml (VAE factor 4, UNet x2: pixel multiple 8; DINOv3 patch 8).
_DEMO = load_config(Path(__file__).parents[2] / "configs/demo/stage1.yaml")["model"]["init_args"]
_GEN = _DEMO["generator"]["init_args"]
VAE, UNET, SCHEDULER = _GEN["vae"]["config"], _GEN["unet"]["config"], _GEN["scheduler"]["config"]
DINO, TARGETS = _DEMO["discriminator"]["init_args"]["backbone"]["config"], _GEN["lora"]["target_modules"]
LOSS_WEIGHTS = {"ea_dists": 5.0, "mae": 0.5}



@pytest.fixture(scope="module")
def dists(narrow_dists: DISTS) -> DISTS:
    """Narrow random VGG16 trunk (frozen, stateless in training: the session's, see conftest)."""
    torch.manual_seed(0)
    return narrow_dists


def build_module(dists: DISTS, seed: int = 0, **kwargs: Any) -> Stage1Module:
    torch.manual_seed(seed)
    generator = OneStepSDGenerator(
        vae=Source(config=VAE), unet=Source(config=UNET), scheduler=Source(config=SCHEDULER), timestep=200,
        lora=LoraConfig(rank=8, alpha=8, init="gaussian", target_modules=TARGETS), adapter_name="stage1",
    )
    discriminator = DINOv3Discriminator(backbone=Source(config=DINO), layers=[1, 2, 3], head_width=16)
    reconstruction = WeightedLoss({"ea_dists": EdgeAwareDISTS(dists), "mae": MAE()}, dict(LOSS_WEIGHTS))
    kwargs.setdefault("optimizer_g", lambda p: torch.optim.AdamW(p, lr=1e-4))
    kwargs.setdefault("optimizer_d", lambda p: torch.optim.AdamW(p, lr=1e-4))
    return Stage1Module(generator, discriminator, reconstruction, SoftLabelBCE(0.8, 0.8, 0.0),
                        gan_weight=0.5, disc_weight=0.5, **kwargs)


def datamodule(epoch_length: int) -> SRDataModule:
    return SRDataModule(train_dirs=None, crop_size=64, batch_size=1, num_workers=0, epoch_length=epoch_length,
                        degradation=RealESRGANDegradation(preset="light", scale=4, resize_back=True))


def trainer(**kwargs: Any) -> L.Trainer:
    args = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    args.update(kwargs)
    return L.Trainer(**args)


def clone_state(module: torch.nn.Module, keys: set[str] | None = None) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if keys is None or k in keys}


def sn_buffer_names(module: Stage1Module) -> set[str]:
    """Spectral-norm power-iteration vectors of the heads (buffers that change in every D forward in train mode)."""
    return {f"discriminator.{k}" for k in module.discriminator.trainable_state_dict() if k.endswith(("_u", "_v"))}


def tensors_equal(a: Any, b: Any) -> bool:
    """Deep equality of (nested) optimizer states."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(tensors_equal(x, y) for x, y in zip(a, b))
    return a == b


class Recorder(L.Callback):
    """Counts raw optimizer steps (which network, at which batch) and snapshots trainable state per global step."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, str]] = []
        self.batch_idx = -1
        self.at_start: dict[str, Any] = {}
        self.by_step: dict[int, dict[str, Any]] = {}
        self.lora_before_batch: list[dict[str, torch.Tensor]] = []
        self.lora_after_batch: list[dict[str, torch.Tensor]] = []
        self.skipped_logged: list[float] = []

    def snapshot(self, trainer: L.Trainer, module: Stage1Module) -> dict[str, Any]:
        return {"global_step": trainer.global_step,
                "trainable": clone_state(module, module.trainable_names()),
                "optimizers": [
                    {"state": {i: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
                               for i, s in opt.state_dict()["state"].items()},
                     "param_groups": opt.state_dict()["param_groups"]}
                    for opt in trainer.optimizers]}

    def on_train_start(self, trainer: L.Trainer, module: Stage1Module) -> None:
        self.at_start = self.snapshot(trainer, module)
        for which, opt in zip("gd", trainer.optimizers):
            original = opt.step

            def step(*args: Any, _original=original, _which=which, **kwargs: Any) -> Any:
                self.steps.append((self.batch_idx, _which))
                return _original(*args, **kwargs)

            opt.step = step

    def on_train_batch_start(self, trainer: L.Trainer, module: Stage1Module, batch: Any, batch_idx: int) -> None:
        self.batch_idx = batch_idx
        self.lora_before_batch.append({n: p.detach().clone() for n, p in module.generator.trainable_named_parameters()})

    def on_train_batch_end(self, trainer: L.Trainer, module: Stage1Module, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.lora_after_batch.append({n: p.detach().clone() for n, p in module.generator.trainable_named_parameters()})
        skipped = trainer.callback_metrics.get("train/g_skipped_steps")  # logged on stepping batches only
        self.skipped_logged.append(float(skipped) if skipped is not None else float("nan"))
        if trainer.global_step not in self.by_step:
            self.by_step[trainer.global_step] = self.snapshot(trainer, module)


@pytest.fixture(scope="module")
def run(dists: DISTS, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """4 batches of 1 crop with accumulation 2: G and D step after batches 1 and 3 (global_step 2: G updates)."""
    root = tmp_path_factory.mktemp("stage1")
    module = build_module(dists, accumulate=2)
    before = clone_state(module)
    recorder = Recorder()
    export = AdapterExport(dirpath=str(root / "export"), filename="stage1")
    fit = trainer(max_steps=2, logger=TensorBoardLogger(str(root), name="tb"), log_every_n_steps=1,
                  enable_checkpointing=True,
                  callbacks=[recorder, ImageLogger(every_n_steps=1), export,
                             ModelCheckpoint(dirpath=str(root / "ckpt"), every_n_train_steps=1, save_top_k=-1)])
    fit.fit(module, datamodule(epoch_length=4))
    return SimpleNamespace(root=root, module=module, before=before, after=clone_state(module), recorder=recorder,
                           trainer=fit, export=export)


# ------------------------------------------------------------------------------------------------ what trains
def test_only_lora_and_heads_change(run: SimpleNamespace) -> None:
    module = run.module
    trainable = module.trainable_names()
    assert trainable, "nothing trainable"
    assert all(".lora_" in n and ".stage1." in n for n in trainable if n.startswith("generator."))
    assert all(n.startswith("discriminator.heads.") for n in trainable if n.startswith("discriminator."))
    allowed = trainable | sn_buffer_names(module)
    frozen = [k for k in run.before if k not in allowed]
    # the comparison covers every frozen network: VAE, UNet base, DINOv3 backbone, VGG16 of DISTS
    for prefix in ("generator.vae.", "generator.unet.", "discriminator.backbone.", "reconstruction.terms.ea_dists."):
        assert any(k.startswith(prefix) for k in frozen), prefix
    assert any(k.endswith("base_layer.weight") for k in frozen)  # the UNet weights under the LoRA layers
    changed_frozen = [k for k in frozen if not torch.equal(run.before[k], run.after[k])]
    assert changed_frozen == []
    changed = {k for k in trainable if not torch.equal(run.before[k], run.after[k])}
    heads = {k for k in trainable if k.startswith("discriminator.")}
    assert heads <= changed  # every head parameter stepped
    # gaussian init: B starts at 0 and only a real gradient moves it. Exception: cross-attention (attn2), because the
    # condition here is all zeros (no text encoder): keys and values are 0, so its q, k, v and out get no gradient.
    lora_b = {k for k in trainable if ".lora_B." in k and ".attn2." not in k}
    assert len(lora_b) > 20 and lora_b <= changed
    assert all(p.requires_grad for p in module.generator_parameters() + module.discriminator_parameters())


def test_accumulation_steps_every_second_batch(run: SimpleNamespace) -> None:
    # global_step counts generator updates: one window of 2 batches advances it by 1 (one G and one D update)
    assert run.recorder.steps == [(1, "g"), (1, "d"), (3, "g"), (3, "d")]
    assert run.trainer.global_step == 4 // 2
    assert run.module.discriminator_updates == 4 // 2


# ------------------------------------------------------------------------------------------------ checkpoints
def test_checkpoint_holds_only_trainable_state(run: SimpleNamespace) -> None:
    ckpt = torch.load(run.root / "ckpt" / "epoch=0-step=2.ckpt", map_location="cpu", weights_only=False)
    module = run.module
    assert ckpt["global_step"] == 2 and ckpt["updates"] == {"generator": 2, "discriminator": 2}
    assert set(ckpt["state_dict"]) == module.trainable_names() | sn_buffer_names(module)
    for key, value in ckpt["state_dict"].items():
        assert torch.equal(value, run.after[key]), key
    assert len(ckpt["optimizer_states"]) == 2
    assert ckpt["guard"]["total_skips"] == {"g": 0, "d": 0}


def test_resume_restores_step_weights_and_optimizer(run: SimpleNamespace, dists: DISTS) -> None:
    saved = run.recorder.by_step[1]  # state when epoch=0-step=1.ckpt was written
    module = build_module(dists, accumulate=2)  # same (seeded) frozen networks, trainable parts perturbed below
    with torch.no_grad():
        for p in module.generator_parameters() + module.discriminator_parameters():
            p.add_(0.5)
    perturbed = clone_state(module, module.trainable_names())
    assert all(not torch.equal(perturbed[k], v) for k, v in saved["trainable"].items())
    recorder = Recorder()
    fit = trainer(max_steps=2, callbacks=[recorder])
    fit.fit(module, datamodule(epoch_length=4), ckpt_path=str(run.root / "ckpt" / "epoch=0-step=1.ckpt"))
    start = recorder.at_start
    assert start["global_step"] == 1 and module.discriminator_updates == 2  # 1 restored + 1 new D update
    assert start["trainable"].keys() == saved["trainable"].keys()
    for key, value in saved["trainable"].items():
        assert torch.equal(start["trainable"][key], value), key
    assert tensors_equal(start["optimizers"], saved["optimizers"])
    assert start["optimizers"][0]["state"], "optimizer state was empty: nothing restored"
    # it continues: one more window of 2 batches, one G and one D step, to max_steps
    assert fit.global_step == 2
    assert [which for _, which in recorder.steps] == ["g", "d"]


# ------------------------------------------------------------------------------------------------ callbacks
def test_exported_adapter_loads_into_fresh_unet(run: SimpleNamespace) -> None:
    from diffusers import UNet2DConditionModel

    path = run.root / "export" / "stage1.safetensors"
    assert path.is_file() and run.export.last_path == path
    gen = run.module.generator.eval()
    base = {k.replace(".base_layer", ""): v for k, v in gen.unet.state_dict().items() if ".lora_" not in k}
    fresh = UNet2DConditionModel.from_config(UNET)
    fresh.load_state_dict(base)  # strict: the base weights of the trained UNet, without any LoRA
    fresh.load_lora_adapter(str(path), prefix=None, adapter_name="stage1", use_safetensors=True)
    fresh.eval()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))  # (B, 3, H, W)
    trained_unet = gen.unet
    try:
        with torch.no_grad():
            expected = gen(x)
            gen.unet = fresh
            got = gen(x)
            gen.unet = UNet2DConditionModel.from_config(UNET)
            gen.unet.load_state_dict(base)
            bare = gen(x)
    finally:
        gen.unet = trained_unet
        gen.train()
    assert (expected - bare).abs().max() > 1e-4  # the trained adapter matters
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_tensorboard_images_and_scalars(run: SimpleNamespace) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(run.trainer.logger.log_dir, size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert "train/images_lq_sr_gt" in tags["images"]
    image = events.Images("train/images_lq_sr_gt")[0]
    assert (image.height, image.width) == (64, 3 * 64)  # LQ | SR | GT side by side (one sample: no grid padding)
    for tag in ("train/g_total", "train/ea_dists", "train/mae", "train/g_adv", "train/d_adv", "train/d_total"):
        assert tag in tags["scalars"], tag
    values = {tag: [e.value for e in events.Scalars(tag)] for tag in tags["scalars"]}
    assert len(values["train/g_total"]) == 4  # one value per batch
    # x-axis: generator updates after each batch (micro-batches of one accumulation window share their step)
    for tag in ("train/g_total", "train/d_total"):
        assert [e.step for e in events.Scalars(tag)] == [0, 1, 1, 2], tag
    for g, ea, mae, adv in zip(values["train/g_total"], values["train/ea_dists"], values["train/mae"],
                               values["train/g_adv"]):
        assert g == pytest.approx(5.0 * ea + 0.5 * mae + 0.5 * adv, rel=1e-5)  # eq. 8 with the config's weights
    for d, d_adv in zip(values["train/d_total"], values["train/d_adv"]):
        assert d == pytest.approx(0.5 * d_adv, rel=1e-6)


# ------------------------------------------------------------------------------------------------ non-finite guard
def test_nan_loss_skips_the_step_and_training_continues(dists: DISTS, monkeypatch: pytest.MonkeyPatch) -> None:
    module = build_module(dists, accumulate=1)
    calls = {"n": 0}
    original = module.reconstruction.forward

    def poisoned(sr: torch.Tensor, gt: torch.Tensor, step: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, terms = original(sr, gt, step=step)
        calls["n"] += 1
        if calls["n"] == 2:  # the second batch
            nan = torch.tensor(float("nan"))
            return loss * nan, {**terms, "mae": nan}
        return loss, terms

    monkeypatch.setattr(module.reconstruction, "forward", poisoned)
    recorder = Recorder()
    fit = trainer(max_epochs=1, max_steps=-1, callbacks=[recorder], log_every_n_steps=1)
    fit.fit(module, datamodule(epoch_length=3))
    assert fit.state.finished and calls["n"] == 3
    before, after = recorder.lora_before_batch, recorder.lora_after_batch
    assert len(after) == 3

    def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
        return all(torch.equal(a[k], b[k]) for k in a)

    assert not same(before[0], after[0])
    assert same(before[1], after[1])  # the NaN batch: no G step, so AdamW's decay and momentum did not move it
    assert not same(before[2], after[2])
    assert all(torch.isfinite(p).all() for p in module.generator_parameters())
    assert recorder.skipped_logged == [0.0, 1.0, 1.0]
    assert [w for _, w in recorder.steps] == ["g", "d", "d", "g", "d"]
    assert fit.global_step == 2 and module.discriminator_updates == 3  # the skipped G update is not counted
    assert module.guard.total_skips == {"g": 1, "d": 0} and module.guard.consecutive == {"g": 0, "d": 0}
