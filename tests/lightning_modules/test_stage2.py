"""TUDSR stage 2 (Algorithm 2): chunked GAN with one backward (and step) per chunk, on CPU with tiny real classes.

GT crops of 64 with N = 2 and R = 32: the stage-1 pass runs at 32, the stage-2 pass on 4 chunks of 32.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from datamodules import SRDataModule
from datamodules.degradation import RealESRGANDegradation
from lightning_modules.stage2 import Stage2Module, chunk_grid
from losses.adversarial import SoftLabelBCE
from losses.dists import DISTS
from losses.edges import EdgeAwareDISTS
from losses.pixel import MAE
from losses.weighted import WeightedLoss
from models.discriminators.multilevel import DINOv3Discriminator
from models.generators.sd_onestep import OneStepSDGenerator
from models.lora import LoraConfig
from models.pretrained import MissingWeightsError, Source
from parsed_configs import load_config  # each repository config parsed once per session

# The tiny architectures of configs/demo/stage2.yaml.
_DEMO = load_config(Path(__file__).parents[2] / "configs/demo/stage2.yaml")["model"]["init_args"]
_GEN = _DEMO["generator"]["init_args"]
VAE, UNET, SCHEDULER = _GEN["vae"]["config"], _GEN["unet"]["config"], _GEN["scheduler"]["config"]
DINO, TARGETS = _DEMO["discriminator"]["init_args"]["backbone"]["config"], _GEN["lora"]["target_modules"]
CROP, N, R = 64, 2, 32
CHUNKS = (CROP // R) ** 2  # N^2 = 4



@pytest.fixture(scope="module")
def dists(narrow_dists: DISTS) -> DISTS:
    """Narrow random VGG16 trunk (frozen, stateless in training: the session's, see conftest)."""
    torch.manual_seed(0)
    return narrow_dists


def build_generator(adapter: str, timestep: int, latent_mode: str = "sample") -> OneStepSDGenerator:
    torch.manual_seed(0)  # same seed: the same frozen VAE / UNet weights for the stage-1 and stage-2 generators
    return OneStepSDGenerator(
        vae=Source(config=VAE), unet=Source(config=UNET), scheduler=Source(config=SCHEDULER), timestep=timestep,
        lora=LoraConfig(rank=8, alpha=8, init="gaussian", target_modules=TARGETS), adapter_name=adapter,
        latent_mode=latent_mode,
    )


@pytest.fixture(scope="module")
def stage1(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny stage-1 generator with a non-zero adapter, exported as the stage-2 modules' frozen adapter."""
    gen = build_generator("stage1", 200)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in gen.trainable_named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    path = gen.export_adapter(tmp_path_factory.mktemp("stage1") / "stage1.safetensors")
    return SimpleNamespace(generator=gen.eval(), path=Path(path))


def build_module(dists: DISTS, stage1_path: Path | str, latent_mode: str = "sample", **kwargs: Any) -> Stage2Module:
    generator = build_generator("stage2", 50, latent_mode)
    torch.manual_seed(2)
    discriminator = DINOv3Discriminator(backbone=Source(config=DINO), layers=[1, 2, 3], head_width=16)
    reconstruction = WeightedLoss({"ea_dists": EdgeAwareDISTS(dists), "mae": MAE()}, {"ea_dists": 5.0, "mae": 0.5})
    kwargs = {"n": N, "chunk": R, "accumulate": 1, **kwargs}
    return Stage2Module(generator, discriminator, reconstruction, SoftLabelBCE(0.8, 0.8, 0.0), gan_weight=0.5,
                        disc_weight=0.5, optimizer_g=lambda p: torch.optim.AdamW(p, lr=1e-4),
                        optimizer_d=lambda p: torch.optim.AdamW(p, lr=1e-4), stage1_adapter=str(stage1_path),
                        stage1_name="stage1", t1=200, **kwargs)


def datamodule(epoch_length: int) -> SRDataModule:
    return SRDataModule(train_dirs=None, crop_size=CROP, batch_size=1, num_workers=0, epoch_length=epoch_length,
                        degradation=RealESRGANDegradation(preset="light", scale=4, resize_back=True))


def trainer(**kwargs: Any) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     limit_val_batches=0, **kwargs)


def clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class StepRecorder(L.Callback):
    """Wraps the raw optimizers' ``step``: which network stepped at which batch, and the gradients it applied."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, str]] = []
        self.grads: dict[str, list[torch.Tensor]] = {"g": [], "d": []}
        self.batch: dict[str, Any] | None = None
        self.state_before: dict[str, torch.Tensor] = {}
        self.batch_idx = -1

    def on_train_start(self, trainer: L.Trainer, module: Stage2Module) -> None:
        params = {"g": module.generator_parameters(), "d": module.discriminator_parameters()}
        for which, opt in zip("gd", trainer.optimizers):
            original = opt.step

            def step(*args: Any, _original=original, _which=which, **kwargs: Any) -> Any:
                self.steps.append((self.batch_idx, _which))
                self.grads[_which] = [p.grad.detach().clone() for p in params[_which]]
                return _original(*args, **kwargs)

            opt.step = step

    def on_train_batch_start(self, trainer: L.Trainer, module: Stage2Module, batch: Any, batch_idx: int) -> None:
        self.batch_idx = batch_idx
        if self.batch is None:  # the first batch, after the degradation
            self.batch = {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()}
            self.state_before = clone_state(module)


@pytest.fixture(scope="module")
def run(dists: DISTS, stage1: SimpleNamespace) -> SimpleNamespace:
    """Per-chunk stepping (the paper's default), 2 images."""
    module = build_module(dists, stage1.path)
    before = clone_state(module)
    recorder = StepRecorder()
    fit = trainer(callbacks=[recorder])
    fit.fit(module, datamodule(epoch_length=2))
    return SimpleNamespace(module=module, before=before, after=clone_state(module), recorder=recorder, trainer=fit)


def test_per_chunk_stepping_counts(run: SimpleNamespace) -> None:
    # Algorithm 2: for each of the N^2 chunks a generator step, then a discriminator step on that chunk
    per_image = ["g", "d"] * CHUNKS
    assert run.recorder.steps == [(0, w) for w in per_image] + [(1, w) for w in per_image]
    assert run.trainer.global_step == run.module.discriminator_updates == 2 * CHUNKS  # generator updates


def test_stage1_adapter_and_backbones_unchanged(run: SimpleNamespace, stage1: SimpleNamespace) -> None:
    module = run.module
    trainable = module.trainable_names()
    gen_trainable = {n for n in trainable if n.startswith("generator.")}
    assert gen_trainable and all(".stage2." in n for n in gen_trainable)
    sn = {f"discriminator.{k}" for k in module.discriminator.trainable_state_dict() if k.endswith(("_u", "_v"))}
    frozen = [k for k in run.before if k not in trainable | sn]
    stage1_keys = [k for k in frozen if ".stage1." in k]
    assert stage1_keys and not any(module.state_dict(keep_vars=True)[k].requires_grad for k in stage1_keys)
    for prefix in ("generator.vae.", "generator.unet.", "discriminator.backbone.", "reconstruction."):
        assert any(k.startswith(prefix) for k in frozen), prefix
    assert [k for k in frozen if not torch.equal(run.before[k], run.after[k])] == []
    # ... and the frozen stage-1 adapter still holds exactly the exported file's values
    exported = load_file(str(stage1.path))
    assert len(exported) == len(stage1_keys)
    for key, value in exported.items():
        name = "generator.unet." + key.replace(".lora_A.", ".lora_A.stage1.").replace(".lora_B.", ".lora_B.stage1.")
        assert torch.equal(run.after[name], value), name
    # the stage-2 adapter and the heads did train
    lora_b = [n for n in gen_trainable if ".lora_B." in n and ".attn2." not in n]  # attn2 q/k/v: zero condition
    assert lora_b and all(not torch.equal(run.before[n], run.after[n]) for n in lora_b)
    heads = [n for n in trainable if n.startswith("discriminator.")]
    assert heads and all(not torch.equal(run.before[n], run.after[n]) for n in heads)


def test_fresh_stage2_heads_are_calibrated(dists: DISTS, stage1: SimpleNamespace) -> None:
    """Stage 2 starts a second, fresh head set: before any step, in eval (the generator step), every spectral-norm
    weight is already normalised to a top singular value of 1."""
    disc = build_module(dists, stage1.path).discriminator.eval()
    with torch.no_grad():
        disc(torch.rand(1, 3, R, R))
    layers = [m for m in disc.heads.modules() if hasattr(m, "weight_orig")]
    assert len(layers) == 2 * disc.num_levels
    for layer in layers:
        sigma = torch.linalg.matrix_norm(layer.weight.detach().reshape(layer.weight.shape[0], -1), ord=2)
        assert abs(float(sigma) - 1.0) < 0.05


def test_checkpoint_keeps_and_restores_spectral_norm_vectors(run: SimpleNamespace, dists: DISTS,
                                                             stage1: SimpleNamespace) -> None:
    """The trainable-only checkpoint filter keeps the heads' u/v vectors, and loading the file the way Lightning
    resumes (``load_state_dict(strict=strict_loading)``) puts them back into a fresh module."""
    checkpoint = {"state_dict": {k: v.clone() for k, v in run.module.state_dict().items()}}
    run.module.on_save_checkpoint(checkpoint)
    state = checkpoint["state_dict"]
    sn = {f"discriminator.{k}" for k in run.module.discriminator.trainable_state_dict() if k.endswith(("_u", "_v"))}
    assert len(sn) == 2 * 2 * run.module.discriminator.num_levels and sn <= set(state)
    fresh = build_module(dists, stage1.path)
    moved = [k for k in sn if not torch.equal(fresh.state_dict()[k], run.after[k])]
    assert moved, "training did not change any u/v: the restore below would prove nothing"
    fresh.load_state_dict(state, strict=fresh.strict_loading)
    restored = fresh.state_dict()
    for key in sn | run.module.trainable_names():
        assert torch.equal(restored[key], run.after[key]), key


def test_stage1_pass_uses_frozen_adapter_at_t1(dists: DISTS, stage1: SimpleNamespace) -> None:
    module = build_module(dists, stage1.path).eval()
    gen = module.generator
    assert gen.adapter_name == "stage2" and gen.active_adapter == "stage2" and set(gen.adapters) == {"stage1", "stage2"}
    lq = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))  # (B, 3, h, w)
    with torch.no_grad():
        m = module.stage1_output(lq, (R, R))  # (B, 3, 32, 32)
        up = F.interpolate(lq, size=(R, R), mode="bicubic", align_corners=False).clamp(0, 1)
        expected = stage1.generator(up, lq)  # the stage-1 generator itself (same frozen weights), adapter 1, t = 200
        stage2_pass = gen(up, lq)
    assert m.shape == (1, 3, R, R)
    torch.testing.assert_close(m, expected, rtol=1e-5, atol=1e-5)
    assert gen.active_adapter == "stage2"  # switched back for the trained pass
    assert (stage2_pass - m).abs().max() > 1e-3  # t2 = 50 with the (zero-init) stage-2 adapter is another function


def test_accumulated_chunks_equal_one_graph(dists: DISTS, stage1: SimpleNamespace) -> None:
    """per_chunk_step=False: the gradients applied at the single step equal those of the sum of the N^2 chunk
    losses built in one graph (same chunks, same discriminator state sequence)."""
    module = build_module(dists, stage1.path, latent_mode="mode", per_chunk_step=False, grad_clip=None)
    recorder = StepRecorder()
    fit = trainer(callbacks=[recorder])
    fit.fit(module, datamodule(epoch_length=1))
    assert recorder.steps == [(0, "g"), (0, "d")] and fit.global_step == 1

    # reference: restore the pre-step state, rebuild all chunk losses in one graph, one backward each for G and D
    module.load_state_dict(recorder.state_before)
    module.train()
    for p in module.generator_parameters() + module.discriminator_parameters():
        p.grad = None
    batch = recorder.batch
    gt = batch["gt"]  # (1, 3, 64, 64)
    with torch.no_grad():
        m = module.stage1_output(batch["lq"], (CROP // N, CROP // N))  # (1, 3, 32, 32)
        y_l = F.interpolate(m, scale_factor=N, mode="bilinear", align_corners=False).clamp(0, 1)  # (1, 3, 64, 64)
    g_total, d_total = torch.zeros(()), torch.zeros(())
    pairs = list(zip(chunk_grid(y_l, R), chunk_grid(gt, R)))
    assert len(pairs) == CHUNKS
    for (_, _, y_l_i), (_, _, gt_i) in pairs:
        sr_i = module.generator(y_l_i.contiguous(), None)  # (1, 3, R, R)
        g_total = g_total + module.generator_loss(sr_i, gt_i)[0]
        d_total = d_total + module.discriminator_loss(sr_i, gt_i)[0]  # D forward in train mode, as in training
    g_total.backward()
    d_total.backward()
    for which, params in (("g", module.generator_parameters()), ("d", module.discriminator_parameters())):
        got = recorder.grads[which]
        want = [p.grad for p in params]
        assert len(got) == len(want) and all(w is not None for w in want)
        flat_got, flat_want = torch.cat([g.flatten() for g in got]), torch.cat([w.flatten() for w in want])
        assert flat_want.abs().max() > 0
        torch.testing.assert_close(flat_got, flat_want, rtol=1e-4, atol=1e-6 * float(flat_want.abs().max()))


def test_m4n2_variant_trains_on_x8_lq_with_accumulation_4(dists: DISTS, stage1: SimpleNamespace) -> None:
    """M = 4 with a x8 degradation: the 8 px LQ of a 64 px GT is upsampled x4 to the stage-1 pass at H/N = 32 (the
    x8 inference path, M4N2); with accumulation 4 the N^2 = 4 chunk backwards of the image make one G and one D
    update (the real configs' schedule: 3,500 images = 3,500 updates)."""
    module = build_module(dists, stage1.path, m=4, accumulate=4)
    seen: list[tuple[tuple[int, ...], tuple[int, int]]] = []
    original = module.stage1_output

    def spy(lq: torch.Tensor, size: tuple[int, int], *cond: object) -> torch.Tensor:
        seen.append((tuple(lq.shape[-2:]), tuple(size)))
        return original(lq, size, *cond)

    module.stage1_output = spy
    recorder = StepRecorder()
    data = SRDataModule(train_dirs=None, crop_size=CROP, batch_size=1, num_workers=0, epoch_length=1,
                        degradation=RealESRGANDegradation(preset="light", scale=8, resize_back=True))
    trainer(callbacks=[recorder]).fit(module, data)
    assert seen == [((CROP // 8, CROP // 8), (CROP // N, CROP // N))]  # 8 -> x4 -> 32 -> x2 -> 64
    assert recorder.steps == [(0, "g"), (0, "d")]
    with pytest.raises(ValueError, match=r"M=4, N=2: a 64x64 GT needs a 8x8 LQ .* got 16x16.*scale to 8"):
        module.training_step({"gt": torch.rand(1, 3, CROP, CROP), "lq": torch.rand(1, 3, CROP // 4, CROP // 4)}, 0)
    with pytest.raises(ValueError, match="M must be a positive integer"):
        build_module(dists, stage1.path, m=0)


def test_chunk_grid_order_and_content() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    chunks = list(chunk_grid(x, 2))
    assert [(r, c) for r, c, _ in chunks] == [(0, 0), (0, 1), (1, 0), (1, 1)]  # left to right, top to bottom
    assert torch.equal(chunks[1][2], torch.tensor([[[[2.0, 3.0], [6.0, 7.0]]]]))
    top = torch.cat([chunks[0][2], chunks[1][2]], -1)
    bottom = torch.cat([chunks[2][2], chunks[3][2]], -1)
    assert torch.equal(torch.cat([top, bottom], -2), x)


def test_chunk_grid_not_divisible_is_clear() -> None:
    with pytest.raises(ValueError, match="not divisible by the chunk size R=4"):
        list(chunk_grid(torch.zeros(1, 3, 6, 8), 4))


def test_chunk_size_must_divide_the_crop(dists: DISTS, stage1: SimpleNamespace) -> None:
    batch = {"gt": torch.rand(1, 3, CROP, CROP), "lq": torch.rand(1, 3, CROP // 4, CROP // 4)}
    module = build_module(dists, stage1.path, chunk=48)
    with pytest.raises(ValueError, match=r"64x64 is not divisible by the chunk size R=48"):
        module.training_step(batch, 0)
    module.n, module.chunk = 3, 32
    with pytest.raises(ValueError, match=r"not divisible by N=3"):
        module.training_step(batch, 0)


def test_missing_stage1_adapter_is_a_clear_error(dists: DISTS, tmp_path: Path) -> None:
    missing = tmp_path / "runs" / "stage1.safetensors"
    with pytest.raises(MissingWeightsError, match=r"TUDSR stage-1 adapter.*stage1\.safetensors"):
        build_module(dists, missing)
