"""Training-pair pool (Real-ESRGAN ``_dequeue_and_enqueue``): mixes pairs across batches.

A batch shares its resize choice, interpolation mode and noise type; the pool decorrelates them by returning
pairs degraded in earlier batches (XPixelGroup/BasicSR ``basicsr/models/realesrgan_model.py``, queue of 180 pairs;
StrSR's released code keeps 256).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["PairPool"]


class PairPool:
    """Queue of ``size`` training pairs (Real-ESRGAN sec. 4.3 "training pair pool").

    While filling, a batch is stored and returned unchanged. Once full, the pool is shuffled (``torch.randperm``
    with the caller's generator), its first B entries are returned and replaced by the incoming batch.
    Per-sample entries are tensors with leading dim B and lists/tuples of length B; other values pass through.
    ``size`` must be a multiple of the batch size.
    """

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError(f"pool size must be > 0, got {size}")
        self.size = size
        self.reset()

    def reset(self) -> None:
        self.queue: dict[str, torch.Tensor | list[Any]] = {}
        self.ptr = 0

    def __len__(self) -> int:
        return self.ptr

    @staticmethod
    def _per_sample_keys(batch: dict[str, Any], b: int) -> list[str]:
        keys = []
        for key, value in batch.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == b:
                keys.append(key)
            elif isinstance(value, (list, tuple)) and len(value) == b:
                keys.append(key)
        return keys

    def __call__(self, batch: dict[str, Any], generator: torch.Generator, batch_size: int) -> dict[str, Any]:
        b = batch_size
        if self.size % b != 0:
            raise ValueError(f"pool_size={self.size} must be a multiple of the batch size {b}")
        keys = self._per_sample_keys(batch, b)
        if not self.queue:
            for key in keys:
                value = batch[key]
                if isinstance(value, torch.Tensor):
                    self.queue[key] = value.new_zeros((self.size, *value.shape[1:]))
                else:
                    self.queue[key] = [None] * self.size
            self.ptr = 0
        elif set(keys) != set(self.queue):
            raise ValueError(f"pool keys changed: pool holds {sorted(self.queue)}, batch has {sorted(keys)}")
        for key in keys:
            q, v = self.queue[key], batch[key]
            if isinstance(q, torch.Tensor) and (q.shape[1:] != v.shape[1:] or q.device != v.device):
                raise ValueError(
                    f"pool entry {key!r} holds {tuple(q.shape[1:])} on {q.device}, got {tuple(v.shape[1:])} on "
                    f"{v.device}; clear it with reset() after changing the crop size or device"
                )

        out = dict(batch)
        if self.ptr < self.size:  # filling: store, return the batch as is
            for key in keys:
                q, v = self.queue[key], batch[key]
                if isinstance(q, torch.Tensor):
                    q[self.ptr : self.ptr + b] = v
                else:
                    q[self.ptr : self.ptr + b] = list(v)
            self.ptr += b
            return out
        idx = torch.randperm(self.size, generator=generator)
        for key in keys:
            q, v = self.queue[key], batch[key]
            if isinstance(q, torch.Tensor):
                q = q[idx.to(q.device)]
                out[key] = q[:b].clone()
                q[:b] = v
            else:
                q = [q[i] for i in idx.tolist()]
                out[key] = type(v)(q[:b]) if isinstance(v, tuple) else q[:b]
                q[:b] = list(v)
            self.queue[key] = q
        return out
