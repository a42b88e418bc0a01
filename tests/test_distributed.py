"""Two-process runs (gloo, CPU) through ``main.py``: the stage-1 and stage-2 demos under ``configs/strategy/ddp.yaml``,
the StrSR demo under ``configs/strategy/fsdp.yaml`` and DDP, and raw FSDP with the LoRA wrap policy.

Each rank of the DDP demo runs records what it trained on and its trainable weights (``RankRecorder``, given to the
CLI by class path with this folder on ``PYTHONPATH``). Ranks that saw different images and ended with bit-identical
adapter and head weights can only have done so through DDP's gradient all-reduce. Every launch is a module-scoped
fixture, run once and read by every test that needs it. All of them are ``slow``: ``python -m pytest -q -m slow``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml

from parsed_configs import load_config  # each repository config parsed once per session

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.slow  # every test here launches two processes


class RankRecorder(L.Callback):
    """Writes ``<out_dir>/rank{r}.pt``: initial and final trainable state, and per batch the image paths, a crop
    fingerprint and the degradation draws this rank used."""

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.out_dir = Path(out_dir)
        self.batches: list[dict[str, Any]] = []
        self.initial: dict[str, torch.Tensor] = {}

    @staticmethod
    def trainable(pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        named = [(f"generator.{n}", p) for n, p in pl_module.generator.trainable_named_parameters()]
        named += [(f"discriminator.{n}", p) for n, p in pl_module.discriminator.trainable_named_parameters()]
        return {n: p.detach().cpu().clone() for n, p in named}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.initial = self.trainable(pl_module)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        params = trainer.datamodule.degradation.last_params  # draws of this (already degraded) batch
        self.batches.append({
            "path": list(batch["path"]),
            "gt_sum": batch["gt"].double().flatten(1).sum(1).tolist(),  # crop fingerprint per sample
            "lq": batch["lq"].cpu().clone(),
            "quality1": params["quality1"].clone(),
        })

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save({
            "rank": trainer.global_rank, "world_size": trainer.world_size, "global_step": trainer.global_step,
            "strategy": type(trainer.strategy).__name__, "seed": trainer.datamodule.degradation.seed,
            "batches": self.batches, "initial": self.initial, "final": self.trainable(pl_module),
        }, self.out_dir / f"rank{trainer.global_rank}.pt")


def ddp_config(tmp: Path, demo: str, max_steps: int, record: Path, **model_args: Any) -> Path:
    """The demo config, tiny: no validation, one checkpoint at the end, exports and logs in ``tmp``, a recorder."""
    cfg = load_config(ROOT / "configs/demo" / f"{demo}.yaml")  # composed and resolved, as --print_config prints it
    trainer = cfg["trainer"]
    trainer.update(max_steps=max_steps, limit_val_batches=0, log_every_n_steps=1, enable_progress_bar=False,
                   enable_model_summary=False)
    trainer["logger"]["init_args"]["save_dir"] = str(tmp / "runs")
    callbacks = []
    for cb in trainer["callbacks"]:
        name = cb["class_path"].rsplit(".", 1)[-1]
        if name == "ModelCheckpoint":
            cb["init_args"].update(dirpath=str(tmp / "ckpt"), every_n_train_steps=max_steps)
        elif name == "AdapterExport":
            cb["init_args"]["dirpath"] = str(tmp / "export")
        elif name in ("EvaluationCallback", "ImageLogger"):
            continue
        callbacks.append(cb)
    callbacks.append({"class_path": "test_distributed.RankRecorder", "init_args": {"out_dir": str(record)}})
    trainer["callbacks"] = callbacks
    cfg["model"]["init_args"].update(model_args)
    cfg["data"]["val_sets"] = []
    path = tmp / f"{demo}_ddp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_ddp(tmp: Path, config: Path) -> tuple[list[dict[str, Any]], float]:
    cmd = [sys.executable, str(ROOT / "main.py"), "fit", "--config", str(config),
           "--config", str(ROOT / "configs/strategy/ddp.yaml"), "--trainer.accelerator", "cpu", "--trainer.devices", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]), "OMP_NUM_THREADS": "1"}
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_PORT"):  # let Lightning launch rank 1 itself
        env.pop(key, None)
    start = time.monotonic()
    result = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - start
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-5000:]
    record = config.parent / "record"
    return [torch.load(record / f"rank{r}.pt", weights_only=False) for r in range(2)], wall


def check_ranks(ranks: list[dict[str, Any]], max_steps: int) -> None:
    r0, r1 = ranks
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world_size"] for r in ranks} == {2}
    assert {r["strategy"] for r in ranks} == {"DDPStrategy"}
    assert r0["global_step"] == r1["global_step"] == max_steps
    # different images and different degradation randomness per rank
    crops0 = {round(s, 6) for b in r0["batches"] for s in b["gt_sum"]}
    crops1 = {round(s, 6) for b in r1["batches"] for s in b["gt_sum"]}
    assert not crops0 & crops1, "a crop was seen by both ranks"
    assert [b["path"] for b in r0["batches"]] != [b["path"] for b in r1["batches"]]
    assert r0["seed"] != r1["seed"]
    for b0, b1 in zip(r0["batches"], r1["batches"]):
        assert not torch.equal(b0["quality1"], b1["quality1"]) and not torch.equal(b0["lq"], b1["lq"])
    # identical trainable weights at the end (adapter and heads), and they moved from their start
    assert r0["final"].keys() == r1["final"].keys() == r0["initial"].keys()
    assert any(k.startswith("generator.") and "lora" in k for k in r0["final"])
    assert any(k.startswith("discriminator.heads") for k in r0["final"])
    for name, value in r0["final"].items():
        assert torch.equal(value, r1["final"][name]), f"{name} differs between ranks"
    for prefix in ("generator.", "discriminator."):
        moved = [not torch.equal(v, r0["initial"][k]) for k, v in r0["final"].items() if k.startswith(prefix)]
        assert any(moved), f"no {prefix} weight changed: nothing was trained"


@pytest.fixture(scope="module")
def stage1_ddp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]], float]:
    tmp = tmp_path_factory.mktemp("ddp_stage1")
    config = ddp_config(tmp, "stage1", max_steps=2, record=tmp / "record")  # 2 batches: 2 G + 2 D updates
    ranks, wall = run_ddp(tmp, config)
    return tmp, ranks, wall


def test_stage1_ddp_two_ranks(stage1_ddp: tuple[Path, list[dict[str, Any]], float]) -> None:
    tmp, ranks, wall = stage1_ddp
    print(f"stage-1 DDP x2: {wall:.0f} s")
    check_ranks(ranks, max_steps=2)
    ckpt = torch.load(tmp / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2 and ckpt["updates"] == {"generator": 2, "discriminator": 2}
    for name, value in ranks[0]["final"].items():  # rank 0 wrote the synced, trainable-only state
        assert torch.equal(ckpt["state_dict"][name], value)
    degradation = ckpt["SRDataModule"]  # both ranks' random streams, gathered into rank 0's file
    assert degradation["world_size"] == 2 and [r["seed"] for r in degradation["ranks"]] == [0, 1]
    assert (tmp / "export" / "stage1.safetensors").is_file()


def test_stage2_ddp_two_ranks(stage1_ddp: tuple[Path, list[dict[str, Any]], float], tmp_path: Path) -> None:
    adapter = stage1_ddp[0] / "export" / "stage1.safetensors"  # the stage-1 adapter the DDP run exported
    config = ddp_config(tmp_path, "stage2", max_steps=4, record=tmp_path / "record", stage1_adapter=str(adapter))
    ranks, wall = run_ddp(tmp_path, config)  # one batch: 4 chunks x (G + D) updates
    print(f"stage-2 DDP x2: {wall:.0f} s")
    check_ranks(ranks, max_steps=4)
    assert all("stage2" in k for k in ranks[0]["final"] if k.startswith("generator."))  # stage-1 adapter frozen


# ------------------------------------------------------------------------------- DDP with gradient accumulation
class SyncRecorder(L.Callback):
    """Writes ``<out_dir>/sync{r}.pt``: every backward (batch, network), the backwards after which an optimizer
    stepped, and the backwards during which DDP all-reduced gradients (a counting comm hook on the DDP model)."""

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.out_dir = Path(out_dir)
        self.batch_idx = -1
        self.backwards: list[tuple[int, str]] = []  # (batch, "g" | "d") per manual_backward, in order
        self.stepped: list[tuple[int, str]] = []  # (index into backwards, network) per optimizer step
        self.allreduced: list[int] = []  # index into backwards, once per bucket all-reduce

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        def hook(state, bucket):  # noqa: ANN001, ANN202 - DDP refuses annotations other than its own classes
            self.allreduced.append(len(self.backwards) - 1)
            return default_hooks.allreduce_hook(state, bucket)

        trainer.strategy.model.register_comm_hook(state=None, hook=hook)
        opts = {id(pl_module.optimizers()[0].optimizer): "g", id(pl_module.optimizers()[1].optimizer): "d"}
        backward = pl_module.manual_backward

        def counted_backward(loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
            which = "g" if len(self.backwards) % 2 == 0 else "d"  # every update pair runs G's backward, then D's
            self.backwards.append((self.batch_idx, which))
            backward(loss, *args, **kwargs)

        pl_module.manual_backward = counted_backward
        for opt in trainer.optimizers:
            original = opt.step

            def step(*args: Any, _original=original, _which=opts[id(opt)], **kwargs: Any) -> Any:
                self.stepped.append((len(self.backwards) - 1, _which))
                return _original(*args, **kwargs)

            opt.step = step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.batch_idx = batch_idx

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save({"backwards": self.backwards, "stepped": self.stepped, "allreduced": self.allreduced},
                   self.out_dir / f"sync{trainer.global_rank}.pt")


def accumulating_run(tmp: Path, demo: str, batches_per_rank: int, **model_args: Any) -> list[dict[str, Any]]:
    """The demo on two ranks with ``accumulate: 4``, exactly ``batches_per_rank`` batches each (one epoch of the
    sampler; no step limit, so the run does not depend on what ``global_step`` counts). Returns both ranks' records
    (RankRecorder and SyncRecorder merged)."""
    config = ddp_config(tmp, demo, max_steps=-1, record=tmp / "record", accumulate=4, **model_args)
    cfg = yaml.safe_load(config.read_text())
    batch_size = int(cfg["data"]["batch_size"])
    cfg["trainer"].update(max_epochs=1, val_check_interval=None)
    for cb in cfg["trainer"]["callbacks"]:
        if cb["class_path"].endswith("ModelCheckpoint"):
            cb["init_args"]["every_n_train_steps"] = 0  # one checkpoint at the end of the epoch
    cfg["data"]["epoch_length"] = 2 * batches_per_rank * batch_size
    cfg["trainer"]["callbacks"].append({"class_path": "test_distributed.SyncRecorder",
                                        "init_args": {"out_dir": str(tmp / "record")}})
    config.write_text(yaml.safe_dump(cfg))
    ranks, wall = run_ddp(tmp, config)
    print(f"{demo} DDP x2, accumulate 4: {wall:.0f} s")
    for r, record in enumerate(ranks):
        record.update(torch.load(tmp / "record" / f"sync{r}.pt", weights_only=False))
    return ranks


def check_accumulated_sync(ranks: list[dict[str, Any]], backwards_per_batch: int, batches: int) -> None:
    """4-batch (or 4-chunk) windows: each network steps once per window, and DDP all-reduces gradients during
    exactly the backwards that precede a step, never during the accumulating ones."""
    check_ranks(ranks, max_steps=ranks[0]["global_step"])  # identical weights, different data; steps counted below
    for record in ranks:
        backwards = record["backwards"]
        assert len(backwards) == backwards_per_batch * batches
        stepped = [i for i, _ in record["stepped"]]
        assert [w for _, w in record["stepped"]] == ["g", "d"] * (len(stepped) // 2)
        assert len(stepped) == 2 * backwards_per_batch * batches // (2 * 4)  # one G and one D per 4 backwards each
        assert sorted(set(record["allreduced"])) == stepped, (record["allreduced"], stepped)
        assert len(stepped) < len(backwards)  # accumulating backwards exist and none of them synchronised


@pytest.fixture(scope="module")
def stage1_accumulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("ddp_stage1_accum")
    return tmp, accumulating_run(tmp, "stage1", batches_per_rank=8)


def test_stage1_ddp_accumulate_4_syncs_only_before_steps(
        stage1_accumulated: tuple[Path, list[dict[str, Any]]]) -> None:
    """Stage 1, accumulation 4 (paper 4.1): 8 batches per rank, G and D step after batches 4 and 8; the ranks end
    with identical adapters and heads, and gradients cross ranks only on the two backwards before each step."""
    _, ranks = stage1_accumulated
    check_accumulated_sync(ranks, backwards_per_batch=2, batches=8)
    assert [b for b, _ in ranks[0]["stepped"]] == [6, 7, 14, 15]  # G and D backwards of batches 3 and 7 (0-based)


def test_stage2_ddp_accumulate_4_syncs_only_before_steps(
        stage1_accumulated: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    """Stage 2, accumulation 4 over the per-chunk backwards: the 4 chunks of an image make one G and one D update,
    synchronised on the last chunk's two backwards only."""
    adapter = stage1_accumulated[0] / "export" / "stage1.safetensors"
    ranks = accumulating_run(tmp_path, "stage2", batches_per_rank=2, stage1_adapter=str(adapter))
    check_accumulated_sync(ranks, backwards_per_batch=8, batches=2)
    assert [b for b, _ in ranks[0]["stepped"]] == [6, 7, 14, 15]  # chunk 4's G and D backwards of each image
    assert all("stage2" in k for k in ranks[0]["final"] if k.startswith("generator."))


# ---------------------------------------------------------------------------------------------- FSDP (CPU, gloo)
FSDP_WORKER = r'''
import json, os, sys
import torch, torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp.wrap import ModuleWrapPolicy
from plugins.fsdp import LoRAWrapPolicy, clip_sharded_grad_norm_, frozen_outside_units

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()


class Block(nn.Module):  # a transformer block: frozen bf16 base + fp32 LoRA factors
    def __init__(self) -> None:
        super().__init__()
        self.base = nn.Linear(8, 8).to(torch.bfloat16).requires_grad_(False)
        self.lora_A, self.lora_B = nn.Linear(8, 2, bias=False), nn.Linear(2, 8, bias=False)

    def forward(self, x):
        return self.base(x.to(torch.bfloat16)).float() + self.lora_B(self.lora_A(x))


class Vae(nn.Module):  # frozen, called through a method other than forward
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(8, 8).requires_grad_(False)

    def encode(self, x):
        return self.enc(x)


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.vae, self.blocks = Vae(), nn.Sequential(Block(), Block())
        self.head = nn.Linear(8, 1)  # "discriminator head": a second network with its own optimizer

    def forward(self, x):
        return self.head(self.blocks(self.vae.encode(x))).pow(2).mean()


mod = __name__
out = {}
torch.manual_seed(0)
plain = Model()
try:
    FSDP(Model(), auto_wrap_policy=ModuleWrapPolicy({Block}), use_orig_params=True, device_id=torch.device("cpu"))
    out["block_policy_error"] = ""
except ValueError as err:
    out["block_policy_error"] = str(err)

torch.manual_seed(0)
model = Model()
policy = LoRAWrapPolicy([f"{mod}.Block"])
ignored = frozen_outside_units(model, policy)
out["ignored"] = sorted(n for n, m in model.named_modules() if m in ignored)
fsdp = FSDP(model, auto_wrap_policy=policy, use_orig_params=True, device_id=torch.device("cpu"), ignored_states=ignored)
x = torch.randn(4, 8, generator=torch.Generator().manual_seed(rank))
fsdp(x).backward()
lora = [p for n, p in model.named_parameters() if "lora" in n]
head = list(model.head.parameters())
head_before = [None if p.grad is None else p.grad.clone() for p in head]
out["norm"] = float(clip_sharded_grad_norm_(fsdp, lora, 1e-3))
out["head_untouched"] = all((a is None and b is None) or torch.equal(a, b) for a, b in zip(head_before, [p.grad for p in head]))

# single-process baseline: the mean of the ranks' losses
xs = [torch.randn(4, 8, generator=torch.Generator().manual_seed(r)) for r in range(world)]
(sum(plain(xx) for xx in xs) / world).backward()
ref_lora = [p for n, p in plain.named_parameters() if "lora" in n]
out["ref_norm"] = float(torch.nn.utils.clip_grad_norm_(ref_lora, 1e-3))
with FSDP.summon_full_params(fsdp, with_grads=True):
    out["grads_match"] = all(torch.allclose(a.grad, b.grad, atol=1e-6) for a, b in zip(lora, ref_lora))
    out["head_grads_match"] = all(torch.allclose(a.grad, b.grad, atol=1e-6) for a, b in zip(head, plain.head.parameters()))
with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
    json.dump(out, f)
dist.destroy_process_group()
# Skip the interpreter's teardown: about one run in eight, a C++ thread left by the failed block-policy FSDP (or
# gloo) aborts the process after destroy_process_group ("terminate called without an active exception", torch
# 2.14, CPU). Everything the test reads is written and closed by now.
os._exit(0)
'''


def test_fsdp_lora_wrap_policy_and_per_network_clipping(tmp_path: Path) -> None:
    """Raw FSDP on CPU (gloo): the block-only policy cannot flatten bf16 base + fp32 LoRA; LoRAWrapPolicy can, the
    frozen VAE is replicated (called via ``encode``), and clipping one network's gradients uses the global norm of
    exactly those gradients (= the single-process reference) and leaves the other network's alone."""
    script = tmp_path / "fsdp_worker.py"
    script.write_text(FSDP_WORKER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tmp_path)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    import json

    for rank in range(2):
        out = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert "uniform dtype" in out["block_policy_error"]
        assert out["ignored"] == ["vae"]
        assert out["norm"] == pytest.approx(out["ref_norm"], rel=1e-5) and out["norm"] > 1e-3
        assert out["grads_match"] and out["head_untouched"] and out["head_grads_match"]


def dit_run(tmp: Path, strategy: str, dtype: str = "fp32") -> dict[str, Any]:
    """The StrSR FLUX.2 demo for ``DIT_STEPS`` steps on two ranks under ``strategy``; returns the last checkpoint and
    the resolved config."""
    cfg = load_config(ROOT / "configs/demo/strsr_flux2.yaml")
    trainer = cfg["trainer"]
    trainer.update(max_steps=DIT_STEPS, limit_val_batches=0, log_every_n_steps=1, enable_progress_bar=False,
                   enable_model_summary=False)
    trainer["logger"]["init_args"]["save_dir"] = str(tmp / "runs")
    trainer["callbacks"] = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                             "init_args": {"dirpath": str(tmp / "ckpt"), "save_last": True,
                                           "every_n_train_steps": DIT_STEPS}}]
    trainer["plugins"] = [{"class_path": "plugins.checkpoint_io.AtomicCheckpointIO"}]
    cfg["data"]["val_sets"] = []
    cfg["model"]["init_args"]["generator"]["init_args"]["backend"]["init_args"]["dtype"] = dtype  # frozen base
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "dit.yaml"
    config.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, str(ROOT / "main.py"), "fit", "--config", str(config), "--config",
           str(ROOT / f"configs/strategy/{strategy}.yaml"), "--trainer.accelerator", "cpu", "--trainer.devices", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    result = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    print(f"DiT {strategy} {dtype} x2: {time.monotonic() - start:.0f} s")
    ckpt = torch.load(tmp / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == DIT_STEPS
    assert ckpt["updates"] == {"generator": DIT_STEPS, "discriminator": DIT_STEPS}  # D steps uncounted, also sharded
    return {"state": ckpt["state_dict"], "config": cfg}


DIT_STEPS = 2  # generator updates; alternating batches: D, G, D, G


@pytest.fixture(scope="module")
def dit_fsdp(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return dit_run(tmp_path_factory.mktemp("dit_fsdp"), "fsdp")


@pytest.fixture(scope="module")
def dit_ddp(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return dit_run(tmp_path_factory.mktemp("dit_ddp"), "ddp")


def last_head_biases(names: Any) -> set[str]:
    """The bias of each discriminator head's last layer (``discriminator.heads.<i>.<last>.bias``)."""
    last: dict[str, tuple[int, str]] = {}
    for name in names:
        parts = name.split(".")
        if name.startswith("discriminator.heads.") and parts[-1] == "bias":
            layer = int(parts[3])
            if layer >= last.get(parts[2], (-1, ""))[0]:
                last[parts[2]] = (layer, name)
    return {name for _, name in last.values()}


def test_dit_fsdp_matches_ddp(dit_fsdp: dict[str, Any], dit_ddp: dict[str, Any]) -> None:
    """The StrSR demo under LoRAFSDPStrategy ends with the same trainable weights as under DDP (fp32 base: the same
    arithmetic): sharding, per-network clipping, the manual-optimisation backward handling and keeping the generator
    step's adversarial gradient out of the frozen heads change nothing.

    One exception, bounded instead of matched: the bias of each head's last layer. RaGAN compares real and fake
    logits of one level by their difference (StrSR eq. 7) and the approximated R1 penalises D(x) - D(x + noise), so
    a constant added to a level's logits cancels and that bias has an exact gradient of zero. What autograd returns
    is float32 rounding (|g| ~ 1e-8, against ~1e-2 for the other head biases), different under DDP's all-reduce and
    FSDP's reduce-scatter once the weights differ in their last bits; AdamW (eps 1e-8) divides it by its own RMS,
    so each discriminator step moves that bias by up to lr in a direction set by rounding. With two D steps at
    lr 1e-4 the two runs measured 4.2e-5 and 1.7e-5 apart (all other tensors: <= 5e-6 relative); the bound is the
    worst case, 2 runs x lr x D steps. A gradient leaking into the heads moves every head tensor by 1e-4..4e-3,
    which the tight comparison of the others catches."""
    fsdp, ddp, cfg = dit_fsdp["state"], dit_ddp["state"], dit_ddp["config"]["model"]["init_args"]
    assert fsdp.keys() == ddp.keys() and any("lora" in k for k in ddp) and any("heads" in k for k in ddp)
    assert cfg["adversarial"]["class_path"].endswith(".RaGAN") and cfg["r1"]["class_path"].endswith(".ApproxR1")
    shift_invariant = last_head_biases(ddp)
    disc = cfg["discriminator"]["init_args"]
    assert len(shift_invariant) == len(disc["stages"]) + int(disc["pooled"])  # one head per level
    d_steps, lr = DIT_STEPS, float(cfg["optimizer_d"]["init_args"]["lr"])
    for name, value in ddp.items():
        if name in shift_invariant:
            torch.testing.assert_close(fsdp[name], value, rtol=0, atol=2 * lr * d_steps, msg=name)
        else:
            torch.testing.assert_close(fsdp[name].float(), value.float(), rtol=1e-4, atol=1e-5, msg=name)


def test_dit_fsdp_bf16_base(tmp_path: Path) -> None:
    """bf16 frozen FLUX.2 blocks with fp32 LoRA (what a plain block wrap policy cannot flatten) train under FSDP and
    checkpoint every trainable tensor, full size, on rank 0."""
    state = dit_run(tmp_path, "fsdp", dtype="bf16")["state"]
    lora = {k: v for k, v in state.items() if "lora_B" in k}
    assert lora and all(v.dtype == torch.float32 and v.dim() == 2 and v.numel() > 0 for v in lora.values())
    assert all(torch.isfinite(v.float()).all() for v in state.values())
    assert any(v.abs().max() > 0 for v in lora.values())  # lora_B starts at zero: it was trained
