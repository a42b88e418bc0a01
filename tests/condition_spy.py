"""Test helper: prove that a DiT module takes its condition from the cached features, never from the VLM."""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch

from models.conditions import VLMCondition


def spy_on_cached_features(monkeypatch: pytest.MonkeyPatch, generator: Any
                           ) -> tuple[list[tuple[list[str], torch.Tensor | None]], L.Callback]:
    """Make any ``VLMCondition.forward`` fail and record each ``generator.encode_condition`` call as (paths of the
    training batch being processed, the ``cond_features`` given). Returns the record and the callback (pass it to
    the Trainer) that notes each batch's paths."""

    def no_vlm(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the VLM ran although features are cached")

    monkeypatch.setattr(VLMCondition, "forward", no_vlm)
    seen: list[tuple[list[str], torch.Tensor | None]] = []
    paths: list[list[str]] = []
    encode = generator.encode_condition

    def spy(lq: Any, batch_size: int, cond_features: torch.Tensor | None = None) -> torch.Tensor:
        seen.append((list(paths[-1]), cond_features))
        return encode(lq, batch_size, cond_features)

    monkeypatch.setattr(generator, "encode_condition", spy)

    class Paths(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, module: Any, batch: Any, batch_idx: int) -> None:
            paths.append(batch["path"])

    return seen, Paths()
