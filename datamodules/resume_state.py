"""Resume state that Lightning does not save by itself: the degradation random stream and pair pool, per rank.

Plain torch (+ ``torch.distributed``); ``SRDataModule.state_dict`` / ``load_state_dict`` delegate here, and
Lightning stores the result in every checkpoint under the DataModule's class name.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DEFAULT_MAX_POOL_BYTES", "degradation_state_dict", "load_degradation_state_dict", "fold_seed"]

DEFAULT_MAX_POOL_BYTES = 64 * 2**20
_VERSION = 1


def fold_seed(seed: int, rank: int, step: int) -> int:
    """A fresh 63-bit seed from (base seed, rank, step): distinct streams per rank, different from the first run."""
    digest = hashlib.blake2b(f"{int(seed)}/{int(rank)}/{int(step)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _pool_bytes(pool: Any) -> int:
    return sum(v.numel() * v.element_size() for v in pool.queue.values() if torch.is_tensor(v))


def _pool_state(pool: Any, max_bytes: int) -> dict[str, Any] | None:
    """The pool's queue on CPU, or None when there is no pool or it is larger than ``max_bytes``."""
    if pool is None or not pool.queue or _pool_bytes(pool) > max_bytes:
        return None
    queue = {k: v.detach().cpu().clone() if torch.is_tensor(v) else list(v) for k, v in pool.queue.items()}
    return {"size": pool.size, "ptr": pool.ptr, "queue": queue}


def _local_state(degradation: nn.Module, max_pool_bytes: int) -> dict[str, Any]:
    return {
        "seed": int(degradation.seed),
        "generator": degradation.generator.get_state(),  # ByteTensor, CPU (mt19937: 5056 bytes)
        "pool": _pool_state(getattr(degradation, "pool", None), max_pool_bytes),
    }


def degradation_state_dict(
    degradation: nn.Module, rank: int = 0, world_size: int = 1, global_step: int = 0,
    max_pool_bytes: int = DEFAULT_MAX_POOL_BYTES,
) -> dict[str, Any]:
    """State of ``RealESRGANDegradation`` on every rank: ``{"version", "world_size", "global_step", "ranks": [...]}``.

    Each rank degrades with its own stream (seed ``base + rank``), and Lightning writes the checkpoint from rank 0
    only, so under an initialised process group the per-rank states are gathered with ``all_gather_object`` (a few
    KiB per rank). Lightning calls ``state_dict`` on every rank when it saves (``Trainer.save_checkpoint`` dumps on
    all ranks), so the collective is matched. The pair pool is saved only if its queue is at most
    ``max_pool_bytes`` (Real-ESRGAN's 180 pairs at 512 px are ~1 GB: those pools are refilled after a resume, the
    first ``pool_size / B`` batches passing through unmixed as at the start of training).
    """
    local = _local_state(degradation, max_pool_bytes)
    if world_size > 1 and dist.is_available() and dist.is_initialized():
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, local)
    else:
        gathered = [local]
    return {"version": _VERSION, "world_size": len(gathered), "global_step": int(global_step), "ranks": gathered}


def load_degradation_state_dict(
    degradation: nn.Module, state: dict[str, Any], rank: int = 0, world_size: int = 1,
    device: torch.device | str | None = None,
) -> bool:
    """Restore this rank's degradation stream (and pool, if it was saved). Returns True on an exact restore.

    When the checkpoint came from a different number of ranks, the streams cannot be matched to ranks: each rank
    is reseeded with :func:`fold_seed` (base seed, rank, saved step), distinct per rank and unlike the first run,
    the pool is emptied, and a warning says so.
    """
    ranks = state.get("ranks", [])
    if state.get("version") != _VERSION or len(ranks) != world_size or rank >= len(ranks):
        warnings.warn(
            f"degradation state saved by {len(ranks)} rank(s), resuming on {world_size}: reseeding the degradation "
            f"streams (seed, rank, step) and refilling the pair pool", stacklevel=2,
        )
        degradation.set_seed(fold_seed(degradation.seed, rank, int(state.get("global_step", 0))))
        if getattr(degradation, "pool", None) is not None:
            degradation.pool.reset()
        return False
    mine = ranks[rank]
    degradation.set_seed(mine["seed"])
    degradation.generator.set_state(mine["generator"])
    pool, saved = getattr(degradation, "pool", None), mine.get("pool")
    if pool is not None:
        pool.reset()
        if saved is not None and saved["size"] == pool.size:
            pool.queue = {k: v.to(device) if torch.is_tensor(v) and device is not None else v
                          for k, v in saved["queue"].items()}
            pool.ptr = int(saved["ptr"])
    return True
