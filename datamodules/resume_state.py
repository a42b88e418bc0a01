"""Resume state that Lightning does not save by itself: the degradation random stream and pair pool, and the
training sampler's position in its epoch, per rank.

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

__all__ = ["DEFAULT_MAX_POOL_BYTES", "degradation_state_dict", "load_degradation_state_dict", "fold_seed",
           "load_sampler_state_dict", "sampler_state_dict"]

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


def _gather(local: Any, world_size: int) -> list[Any]:
    """Every rank's ``local`` (``all_gather_object``, matched on all ranks) or ``[local]`` without a process group."""
    if world_size > 1 and dist.is_available() and dist.is_initialized():
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, local)
        return gathered
    return [local]


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
    gathered = _gather(_local_state(degradation, max_pool_bytes), world_size)
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


def sampler_state_dict(sampler: Any, consumed: int, world_size: int = 1) -> dict[str, Any]:
    """Every rank's position in the epoch: ``{"version", "world_size", "ranks": [EpochSampler.state_dict]}``.

    ``consumed`` is this rank's samples of the current epoch that the training loop has used (batches x batch
    size), not the sampler's own count: loader workers and Lightning's prefetch draw ahead of the loop. Gathered
    like :func:`degradation_state_dict` (called on every rank).
    """
    ranks = _gather(sampler.state_dict(consumed), world_size)
    return {"version": _VERSION, "world_size": len(ranks), "ranks": ranks}


_ORDER_KEYS = ("seed", "dataset_size", "epoch_length")


def load_sampler_state_dict(sampler: Any, state: dict[str, Any], rank: int = 0, world_size: int = 1) -> bool:
    """Continue this rank's epoch at its saved next sample. Returns True on an exact restore.

    Under another number of ranks the epoch continues at the first position no rank had reached, split over the
    new ranks: the global order's first positions do not depend on the number of ranks, so nothing is replayed.
    Lightning's restored batch count of that epoch no longer matches the new split, though: with more ranks than
    before it ends the epoch a few batches early, and the epoch's last positions are skipped. A changed data set
    size, seed or ``epoch_length`` changes the order itself: the position is kept, with a warning.
    """
    ranks = state.get("ranks", [])
    if state.get("version") != _VERSION or not ranks:
        warnings.warn("sampler state not understood: the resumed epoch starts from its beginning", stacklevel=2)
        return False
    first = ranks[0]
    changed = [k for k in _ORDER_KEYS if first.get(k) != sampler.state_dict(0).get(k)]
    if changed:
        warnings.warn(f"the training order changed since the checkpoint ({', '.join(changed)}): the resumed epoch "
                      f"continues at the saved position of a different order", stacklevel=2)
    if len(ranks) == world_size and rank < len(ranks):
        sampler.load_state_dict(ranks[rank])
        return not changed
    start = min(int(r["next"]) for r in ranks)  # every position before it was used, none after it (lockstep)
    warnings.warn(
        f"sampler state saved by {len(ranks)} rank(s), resuming on {world_size}: the epoch continues at global "
        f"position {start} of the same order, split over the new ranks (the epoch may end a few batches early)",
        stacklevel=2,
    )
    sampler.load_state_dict({**first, "next": start + rank, "consumed": min(int(r["consumed"]) for r in ranks)})
    return False
