"""Crash-safe runs: atomic checkpoint files, degradation state and sampler position across a resume, SIGKILL +
``--ckpt_path last`` (the resumed run trains on the same crops as an uninterrupted one)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

from datamodules.degradation import DegradationConfig, KernelSampler, RealESRGANDegradation
from datamodules.datasets import EpochSampler
from datamodules.resume_state import (
    degradation_state_dict, fold_seed, load_degradation_state_dict, load_sampler_state_dict,
)
from parsed_configs import load_config  # each repository config parsed once per session
from plugins.checkpoint_io import TMP_SUFFIX, AtomicCheckpointIO

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------------------------- atomic checkpoints
_TORCH_SAVE = torch.save  # the real one, kept before any test patches torch.save


def _real_bytes(obj: dict) -> bytes:
    buf = io.BytesIO()
    _TORCH_SAVE(obj, buf)
    return buf.getvalue()


def test_atomic_save_roundtrip_and_overwrite(tmp_path: Path) -> None:
    io_ = AtomicCheckpointIO()
    path = tmp_path / "sub" / "last.ckpt"
    io_.save_checkpoint({"global_step": 2, "w": torch.arange(4.0)}, path)
    io_.save_checkpoint({"global_step": 4, "w": torch.arange(4.0) * 2}, path)  # overwrite by rename
    loaded = io_.load_checkpoint(path)
    assert loaded["global_step"] == 4 and torch.equal(loaded["w"], torch.arange(4.0) * 2)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_exception_mid_save_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    io_ = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io_.save_checkpoint({"global_step": 2, "w": torch.ones(1000)}, path)
    before = path.read_bytes()

    def crashing_save(obj, f, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003 - torch.save's signature
        data = _real_bytes(obj)
        f.write(data[: len(data) // 2])  # half a checkpoint reaches the disk, then the "crash"
        f.flush()
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="simulated"):
        io_.save_checkpoint({"global_step": 4, "w": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # previous checkpoint intact, byte for byte
    assert io_.load_checkpoint(path)["global_step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # the partial temp file was removed


def _killed_writer(path: str) -> None:
    """Child process: start an atomic save, write half the bytes, then die without any cleanup (like SIGKILL)."""

    def dying_save(obj, f, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        data = _real_bytes(obj)
        f.write(data[: len(data) // 2])
        f.flush()
        os._exit(9)

    torch.save = dying_save
    AtomicCheckpointIO().save_checkpoint({"global_step": 4, "w": torch.zeros(1000)}, path)


def test_process_killed_mid_save_leaves_only_a_stale_tmp(tmp_path: Path) -> None:
    io_ = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io_.save_checkpoint({"global_step": 2, "w": torch.ones(1000)}, path)
    before = path.read_bytes()
    proc = mp.get_context("fork").Process(target=_killed_writer, args=(str(path),))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 9
    tmp = path.with_name(path.name + TMP_SUFFIX)
    assert tmp.exists() and 0 < tmp.stat().st_size < len(_real_bytes({"global_step": 4, "w": torch.zeros(1000)}))
    assert path.read_bytes() == before
    # Lightning's ckpt_path="last" only considers last*.ckpt: the stale temp file is never picked up
    trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)], plugins=[AtomicCheckpointIO()])
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert trainer.checkpoint_callback._find_last_checkpoints(trainer) == {os.path.normpath(path)}
    io_.save_checkpoint({"global_step": 6}, path)  # the next save replaces both
    assert not tmp.exists() and io_.load_checkpoint(path)["global_step"] == 6


# ---------------------------------------------------------------------------------------------- degradation state
def _batch(n: int, seed: int, size: int = 32) -> dict:
    g = torch.Generator().manual_seed(seed)
    sampler = KernelSampler(DegradationConfig.preset("light"))
    rng = np.random.default_rng(seed)
    items = [sampler(rng) for _ in range(n)]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    batch["gt"] = torch.rand(n, 3, size, size, generator=g)
    batch["path"] = [f"s{seed}_{i}.png" for i in range(n)]
    return batch


def test_degradation_state_restores_stream_and_pool() -> None:
    deg = RealESRGANDegradation("light", scale=4, resize_back=True, pool_size=4, seed=3)
    for s in range(2):  # fills the pool (4 pairs, batch 2)
        deg(_batch(2, s))
    state = degradation_state_dict(deg)
    expected = deg(_batch(2, 7))  # pool full: returns earlier pairs, chosen by the restored generator
    fresh = RealESRGANDegradation("light", scale=4, resize_back=True, pool_size=4, seed=123)
    assert load_degradation_state_dict(fresh, state) is True
    got = fresh(_batch(2, 7))
    assert got["path"] == expected["path"] and got["path"] != [f"s7_{i}.png" for i in range(2)]
    for key in ("lq", "gt", "lq_up"):
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
    # without the restore the stream differs
    other = RealESRGANDegradation("light", scale=4, resize_back=True, pool_size=4, seed=3)
    assert not torch.equal(other(_batch(2, 7))["lq"], expected["lq"])


def test_large_pool_is_not_saved_and_refills() -> None:
    deg = RealESRGANDegradation("light", scale=4, pool_size=2, seed=0)
    deg(_batch(2, 0))
    state = degradation_state_dict(deg, max_pool_bytes=1024)
    assert state["ranks"][0]["pool"] is None
    fresh = RealESRGANDegradation("light", scale=4, pool_size=2, seed=5)
    load_degradation_state_dict(fresh, state)
    assert len(fresh.pool) == 0 and fresh.seed == 0


def test_world_size_change_reseeds_distinct_streams() -> None:
    deg = RealESRGANDegradation("light", scale=4, seed=0)
    state = degradation_state_dict(deg, global_step=40)  # saved by one rank
    seeds = []
    for rank in range(2):
        d = RealESRGANDegradation("light", scale=4, seed=0 + rank)
        with pytest.warns(UserWarning, match="reseeding"):
            assert load_degradation_state_dict(d, state, rank=rank, world_size=2) is False
        seeds.append(d.seed)
    assert seeds == [fold_seed(0, 0, 40), fold_seed(1, 1, 40)] and seeds[0] != seeds[1]


GATHER_WORKER = """
import os, sys
import numpy as np, torch, torch.distributed as dist
from datamodules.degradation import DegradationConfig, KernelSampler, RealESRGANDegradation
from datamodules.datasets import EpochSampler
from datamodules.resume_state import degradation_state_dict, load_degradation_state_dict
from datamodules.resume_state import load_sampler_state_dict, sampler_state_dict
rank, world, out = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), {out!r}


def _batch(n, seed):  # as in the test module
    sampler, rng = KernelSampler(DegradationConfig.preset("light")), np.random.default_rng(seed)
    items = [sampler(rng) for _ in range(n)]
    batch = {{k: torch.stack([it[k] for it in items]) for k in items[0]}}
    batch["gt"] = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    return batch


dist.init_process_group("gloo", rank=rank, world_size=world)
deg = RealESRGANDegradation("light", scale=4, seed=10 + rank)
deg(_batch(2, rank))
state = degradation_state_dict(deg, rank, world, global_step=8)
expected = deg(_batch(2, 5))["lq"]
fresh = RealESRGANDegradation("light", scale=4, seed=99)
assert load_degradation_state_dict(fresh, state, rank, world)
sampler = EpochSampler(9, epoch_length=20, num_replicas=world, rank=rank, seed=2)
positions = sampler_state_dict(sampler, consumed=4, world_size=world)
resumed = EpochSampler(9, epoch_length=20, num_replicas=world, rank=rank, seed=2)
assert load_sampler_state_dict(resumed, positions, rank, world)
torch.save({{"state": state, "ok": torch.equal(fresh(_batch(2, 5))["lq"], expected), "positions": positions,
             "rest": list(resumed) == list(sampler)[4:]}}, f"{{out}}/rank{{rank}}.pt")
dist.destroy_process_group()
"""


@pytest.mark.slow  # two processes
def test_per_rank_states_are_gathered_under_ddp(tmp_path: Path) -> None:
    code = GATHER_WORKER.format(out=str(tmp_path))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(random.randint(20000, 40000)),
           "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], env={**env, "RANK": str(r)}, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    errors = [p.communicate(timeout=180)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert all(r["ok"] for r in results)  # each rank restored *its own* stream
    s0, s1 = results[0]["state"], results[1]["state"]
    assert s0["world_size"] == 2 and [r["seed"] for r in s0["ranks"]] == [10, 11]
    assert torch.equal(s0["ranks"][1]["generator"], s1["ranks"][1]["generator"])  # every rank holds the same list
    assert not torch.equal(s0["ranks"][0]["generator"], s0["ranks"][1]["generator"])
    # the sampler positions too: rank r's next sample after 4 of its own is global position r + 2 * 4
    assert all(r["rest"] for r in results) and results[0]["positions"] == results[1]["positions"]
    assert [r["next"] for r in results[0]["positions"]["ranks"]] == [8, 9]


# ---------------------------------------------------------------------------------------------- sampler position
class _Keys(Dataset):
    """Items are the sampler's keys themselves: (index, epoch, position)."""

    def __len__(self) -> int:
        return 5

    def __getitem__(self, key: tuple[int, int, int]) -> torch.Tensor:
        return torch.tensor(key)


def _keys(sampler: EpochSampler, num_workers: int, batches: int | None = None) -> list[tuple[int, int, int]]:
    """The keys a loader of 2-sample batches delivers, in order: the first ``batches`` batches, or all."""
    loader = DataLoader(_Keys(), batch_size=2, sampler=sampler, num_workers=num_workers, drop_last=True)
    out: list[tuple[int, int, int]] = []
    for i, batch in enumerate(loader):  # (2, 3)
        if i == batches:
            break  # the workers have drawn further ahead than the loop consumed
        out += [tuple(int(v) for v in key) for key in batch]
    return out


@pytest.mark.parametrize("num_workers", [0, 2])
def test_sampler_state_roundtrip_continues_at_the_next_sample(num_workers: int) -> None:
    full = EpochSampler(5, epoch_length=14, seed=3)
    full.set_epoch(1)
    expected = _keys(full, 0)
    assert len(expected) == 14 and {k[1] for k in expected} == {1}
    assert [k[2] for k in expected] == list(range(14))
    sampler = EpochSampler(5, epoch_length=14, seed=3)
    sampler.set_epoch(1)
    head = _keys(sampler, num_workers, batches=3)  # the loop consumed 3 batches of 2
    state = sampler.state_dict(consumed=len(head))
    assert state["next"] == 6 and state["epoch"] == 1
    resumed = EpochSampler(5, epoch_length=14, seed=3)  # a new process: epoch 0 until the state is loaded
    resumed.load_state_dict(state)
    assert len(resumed) == 14  # Lightning counts the whole epoch; the loop restores its 3 batches itself
    tail = _keys(resumed, num_workers)
    assert head + tail == expected
    again = resumed.state_dict(consumed=len(head) + 4)  # a second save in the resumed epoch
    assert again["next"] == 10 and again["consumed"] == 10
    resumed.set_epoch(2)  # the next epoch is whole again, and its order depends on (seed, epoch) only
    other = EpochSampler(5, epoch_length=14, seed=3)
    other.set_epoch(2)
    assert _keys(resumed, 0) == _keys(other, 0) != [(i, 2, p) for i, _, p in expected]


def test_sampler_state_per_rank_and_world_size_change() -> None:
    old = [EpochSampler(7, epoch_length=20, num_replicas=2, rank=r, seed=1) for r in range(2)]
    for s in old:
        s.set_epoch(4)
    state = {"version": 1, "world_size": 2, "ranks": [s.state_dict(consumed=3) for s in old]}  # as gathered
    assert [r["next"] for r in state["ranks"]] == [6, 7]
    used = [k for s in old for k in list(s)[:3]]
    for rank in range(2):  # same world size: each rank continues exactly its own positions
        fresh = EpochSampler(7, epoch_length=20, num_replicas=2, rank=rank, seed=1)
        assert load_sampler_state_dict(fresh, state, rank=rank, world_size=2) is True
        assert list(fresh) == list(old[rank])[3:]
    new = [EpochSampler(7, epoch_length=20, num_replicas=3, rank=r, seed=1) for r in range(3)]
    for rank, s in enumerate(new):
        with pytest.warns(UserWarning, match="saved by 2 rank"):
            assert load_sampler_state_dict(s, state, rank=rank, world_size=3) is False
    rest = [k for s in new for k in s]
    positions = sorted(k[2] for k in used + rest)
    assert positions == list(range(new[0].total_size))  # none replayed, none skipped (21 = 20 rounded up to 3)
    reference = EpochSampler(7, epoch_length=21, seed=1)
    reference.set_epoch(4)
    order = {p: i for i, _, p in reference}
    assert all(order[p] == i for i, e, p in used + rest) and {e for _, e, _ in rest} == {4}
    with pytest.warns(UserWarning, match="order changed"):
        load_sampler_state_dict(EpochSampler(8, epoch_length=20, num_replicas=2, seed=1), state, 0, 2)


class _Recorder(L.LightningModule):
    """Trains one scalar; records each training batch as (paths, hash of the degraded GT crops)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[tuple[str, ...], str]] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        gt = batch["gt"].detach().cpu().contiguous()  # (B, 3, crop, crop)
        self.seen.append((tuple(batch["path"]), hashlib.sha1(gt.numpy().tobytes()).hexdigest()))
        return (self.w * gt.mean()).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Crash(RuntimeError):
    pass


class _CrashAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            raise _Crash(f"crash before the batch after step {self.step}")


def _fit(tmp_path: Path, num_workers: int, crash_at: int | None = None, resume: bool = False) -> list:
    from datamodules import SRDataModule

    data = SRDataModule(crop_size=32, batch_size=2, num_workers=num_workers, epoch_length=6, seed=5,
                        degradation=RealESRGANDegradation("light", scale=4, resize_back=True))  # 3 batches/epoch
    model = _Recorder()
    callbacks = [ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_last=True)]
    trainer = Trainer(max_steps=8, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      limit_val_batches=0, callbacks=callbacks + ([_CrashAt(crash_at)] if crash_at else []))
    try:
        trainer.fit(model, datamodule=data, ckpt_path="last" if resume else None)
    except _Crash:
        assert crash_at is not None
    return model.seen


@pytest.mark.parametrize("num_workers", [0, 2])
def test_interrupted_fit_resumes_at_the_same_sample(tmp_path: Path, num_workers: int) -> None:
    """A run stopped at step 3 (end of epoch 0) and at step 4 (mid-epoch 1) and resumed from ``last`` trains on
    the same sequence of crops as an uninterrupted run."""
    expected = _fit(tmp_path / "full", num_workers)
    assert len(expected) == 8 and len(set(expected)) == 8
    for crash_at in (3, 4):
        run = tmp_path / f"crash{crash_at}"
        head = _fit(run, num_workers, crash_at=crash_at)
        saved = torch.load(run / "ckpt" / "last.ckpt", weights_only=False)["SRDataModule"]["sampler"]["ranks"][0]
        assert len(head) == crash_at and (saved["epoch"], saved["consumed"]) == {3: (0, 6), 4: (1, 2)}[crash_at]
        tail = _fit(run, num_workers, resume=True)
        assert head + tail == expected, crash_at


# ---------------------------------------------------------------------------------------------- SIGKILL + resume
MAX_STEPS = 4  # generator updates: 4 batches
EVERY = 1  # one checkpoint per batch


class StallBeforeLastBatch(L.Callback):
    """Sleeps before the last batch (until the test kills the run), so that a fast machine cannot finish the run,
    final checkpoint included, before the random moment of the kill."""

    def __init__(self, max_steps: int, seconds: float = 300.0) -> None:
        self.max_steps, self.seconds = max_steps, seconds

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step >= self.max_steps - EVERY:
            time.sleep(self.seconds)


class RecordBatches(L.Callback):
    """Writes ``<out_dir>/<batch>.json`` for every training batch: its image paths and a hash of its GT crops
    (``batch`` counts across epochs and resumes, so a batch replayed after a resume overwrites its file)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: dict, *args: object) -> None:
        gt = batch["gt"].detach().cpu().contiguous()  # (B, 3, crop, crop)
        record = {"path": list(batch["path"]), "gt": hashlib.sha1(gt.numpy().tobytes()).hexdigest()}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        index = trainer.fit_loop.epoch_loop.total_batch_idx
        (self.out_dir / f"{index:05d}.json").write_text(json.dumps(record))


def recorded(out_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))]


def resume_config(tmp_path: Path, stall: bool = False) -> Path:
    """The demo stage-1 config with its ModelCheckpoint/exports under tmp_path, no validation, atomic checkpoints,
    every training batch recorded in ``tmp_path/batches``; with ``stall``, the run stops before its last batch and
    waits to be killed."""
    cfg = load_config(ROOT / "configs/demo/stage1.yaml")  # composed and resolved, as --print_config prints it
    trainer = cfg["trainer"]
    trainer.update(max_steps=MAX_STEPS, limit_val_batches=0, log_every_n_steps=1, enable_progress_bar=False,
                   enable_model_summary=False, plugins=[{"class_path": "plugins.checkpoint_io.AtomicCheckpointIO"}])
    trainer["logger"]["init_args"]["save_dir"] = str(tmp_path / "runs")
    callbacks = []
    for cb in trainer["callbacks"]:
        name = cb["class_path"].rsplit(".", 1)[-1]
        if name == "ModelCheckpoint":  # the demo's checkpointing, only denser and in tmp_path
            cb["init_args"].update(dirpath=str(tmp_path / "ckpt"), every_n_train_steps=EVERY)
        elif name == "AdapterExport":
            cb["init_args"]["dirpath"] = str(tmp_path / "export")
        elif name == "EvaluationCallback":
            continue  # no validation in this test
        callbacks.append(cb)
    record = {"class_path": "test_crash_resume.RecordBatches", "init_args": {"out_dir": str(tmp_path / "batches")}}
    callbacks.append(record)
    if stall:
        callbacks.append({"class_path": "test_crash_resume.StallBeforeLastBatch", "init_args": {"max_steps": MAX_STEPS}})
    trainer["callbacks"] = callbacks
    cfg["data"]["val_sets"] = []
    path = tmp_path / ("stage1_killed.yaml" if stall else "stage1_resume.yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path


def step_files(folder: Path) -> dict[int, Path]:
    return {int(p.stem.split("step=")[1]): p for p in folder.glob("epoch=*-step=*.ckpt")}


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.mark.slow
def test_sigkill_then_resume_from_last(tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "ckpt"
    cmd = [sys.executable, str(ROOT / "main.py"), "fit", "--config"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]), "PYTHONUNBUFFERED": "1"}
    start = time.monotonic()
    with open(tmp_path / "run1.log", "wb") as log:
        proc = subprocess.Popen([*cmd, str(resume_config(tmp_path, stall=True))], cwd=tmp_path, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            while not (ckpt_dir / "last.ckpt").exists():
                assert proc.poll() is None, (tmp_path / "run1.log").read_text()[-3000:]
                assert time.monotonic() - start < 240, "no checkpoint after 240 s"
                time.sleep(0.2)
            delay = random.uniform(0.0, 3.0)  # a random moment after the first checkpoint (possibly mid-save)
            time.sleep(delay)
            assert proc.poll() is None, "the run finished before it could be killed"
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # every complete-named checkpoint is loadable (atomic writes), and last.ckpt is the newest one
    saved = step_files(ckpt_dir)
    resumed_from = load(ckpt_dir / "last.ckpt")["global_step"]
    assert all(load(p)["global_step"] == s for s, p in saved.items())
    # last.ckpt is written right after the step file: a kill in between loses at most that one interval
    assert resumed_from in saved and max(saved) - EVERY <= resumed_from < MAX_STEPS and resumed_from % EVERY == 0
    before = {s: (p.stat().st_mtime_ns, p.read_bytes()) for s, p in saved.items() if s <= resumed_from}

    result = subprocess.run([*cmd, str(resume_config(tmp_path)), "--ckpt_path", "last"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    print(f"killed after {delay:.2f} s at step {resumed_from}; total {time.monotonic() - start:.0f} s")

    final = load(ckpt_dir / "last.ckpt")
    assert final["global_step"] == MAX_STEPS
    after = step_files(ckpt_dir)
    # continuous counter: one checkpoint per interval, 2..MAX_STEPS, none missing
    assert sorted(after) == list(range(EVERY, MAX_STEPS + 1, EVERY))
    # the resumed run started at the saved step: it did not rewrite any checkpoint up to it
    for s, (mtime, data) in before.items():
        assert after[s].stat().st_mtime_ns == mtime and after[s].read_bytes() == data
    # optimizer state came back: AdamW's per-parameter step equals the total number of G (and D) updates
    for opt_state in final["optimizer_states"]:
        assert {int(v["step"]) for v in opt_state["state"].values()} == {MAX_STEPS}
    assert final["guard"]["total_skips"] == {"g": 0, "d": 0}
    # the first checkpoint written after the resume is the next interval, with the loop counters continuing
    first_new = load(after[resumed_from + EVERY])
    assert first_new["global_step"] == resumed_from + EVERY
    assert first_new["loops"]["fit_loop"]["epoch_loop.manual_optimization.optim_step_progress"]["total"][
        "completed"] == resumed_from + EVERY
    # the degradation stream is saved with every checkpoint and continued by the resumed run: one batch after the
    # resume it is the saved stream advanced by exactly one batch of draws (a restart would give another state)
    saved = load(after[resumed_from])["SRDataModule"]["ranks"][0]
    first = first_new["SRDataModule"]["ranks"][0]
    replay = RealESRGANDegradation("light", scale=4, resize_back=True)  # the demo's data.degradation
    replay.generator.set_state(saved["generator"])
    replay(_batch(2, 0, size=64))  # draws depend on the batch size only
    assert saved["seed"] == 0 and torch.equal(first["generator"], replay.generator.get_state())

    # the data position: killed mid-epoch (the demo epoch is 32 crops = 16 batches of 2), the resumed run went on
    # with the next sample, so the crops trained on are exactly those of an uninterrupted run
    position = load(after[resumed_from])["SRDataModule"]["sampler"]["ranks"][0]
    assert (position["epoch"], position["consumed"], position["next"]) == (0, 2 * resumed_from, 2 * resumed_from)
    reference = tmp_path / "reference"
    reference.mkdir()
    result = subprocess.run([*cmd, str(resume_config(reference))], cwd=reference, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    expected = recorded(reference / "batches")
    assert len(expected) == MAX_STEPS and len({r["gt"] for r in expected}) == MAX_STEPS
    assert recorded(tmp_path / "batches") == expected
    print(f"with the uninterrupted reference run: {time.monotonic() - start:.0f} s")
