"""Two-process DDP (gloo, CPU) of the stage-1 and stage-2 demos through ``main.py`` + ``configs/strategy/ddp.yaml``.

Each rank records what it trained on and its trainable weights (``RankRecorder``, given to the CLI by class path
with this folder on ``PYTHONPATH``). Ranks that saw different images and ended with bit-identical adapter and head
weights can only have done so through DDP's gradient all-reduce.
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

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent


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
    cfg = yaml.safe_load((ROOT / "configs/demo" / f"{demo}.yaml").read_text())
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
    config = ddp_config(tmp, "stage1", max_steps=4, record=tmp / "record")
    ranks, wall = run_ddp(tmp, config)
    return tmp, ranks, wall


@pytest.mark.slow
def test_stage1_ddp_two_ranks(stage1_ddp: tuple[Path, list[dict[str, Any]], float]) -> None:
    tmp, ranks, wall = stage1_ddp
    print(f"stage-1 DDP x2: {wall:.0f} s")
    check_ranks(ranks, max_steps=4)
    ckpt = torch.load(tmp / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 4
    for name, value in ranks[0]["final"].items():  # rank 0 wrote the synced, trainable-only state
        assert torch.equal(ckpt["state_dict"][name], value)
    assert (tmp / "export" / "stage1.safetensors").is_file()


@pytest.mark.slow
def test_stage2_ddp_two_ranks(stage1_ddp: tuple[Path, list[dict[str, Any]], float], tmp_path: Path) -> None:
    adapter = stage1_ddp[0] / "export" / "stage1.safetensors"  # the stage-1 adapter the DDP run exported
    config = ddp_config(tmp_path, "stage2", max_steps=8, record=tmp_path / "record", stage1_adapter=str(adapter))
    ranks, wall = run_ddp(tmp_path, config)  # one batch: 4 chunks x (G + D) steps
    print(f"stage-2 DDP x2: {wall:.0f} s")
    check_ranks(ranks, max_steps=8)
    assert all("stage2" in k for k in ranks[0]["final"] if k.startswith("generator."))  # stage-1 adapter frozen
