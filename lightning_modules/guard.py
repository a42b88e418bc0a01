"""Non-finite guard: skip optimizer steps whose loss or gradients are not finite, and stop after too many."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


class NonFiniteLossError(RuntimeError):
    """Raised after ``max_skips`` consecutive skipped steps; names the loss terms that went non-finite."""


class NonFiniteGuard:
    """Tracks skipped steps per network (``"g"``, ``"d"``).

    A micro-step whose loss is non-finite is not backpropagated and poisons its accumulation window: the whole
    window's step is skipped, so a NaN can never reach the adapter. Gradients are checked once more before the
    step (a finite loss can still give non-finite gradients).
    """

    def __init__(self, max_skips: int = 10) -> None:
        self.max_skips = max_skips
        self.consecutive: dict[str, int] = {"g": 0, "d": 0}
        self.total_skips: dict[str, int] = {"g": 0, "d": 0}
        self._poisoned: dict[str, list[str]] = {}

    def check_loss(self, which: str, loss: Tensor, terms: dict[str, Tensor]) -> bool:
        if bool(torch.isfinite(loss.detach()).all()):
            return True
        bad = [name for name, value in terms.items() if not bool(torch.isfinite(value.detach()).all())]
        self._poisoned.setdefault(which, []).extend(bad or ["total"])
        return False

    def check_grads(self, which: str, params: Iterable[torch.nn.Parameter]) -> bool:
        if which in self._poisoned:
            return False
        for p in params:
            if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                self._poisoned.setdefault(which, []).append("gradients")
                return False
        return True

    def end_step(self, which: str, stepped: bool) -> None:
        culprits = self._poisoned.pop(which, [])
        if stepped:
            self.consecutive[which] = 0
            return
        self.consecutive[which] += 1
        self.total_skips[which] += 1
        if self.consecutive[which] > self.max_skips:
            names = ", ".join(sorted(set(culprits))) or "unknown"
            raise NonFiniteLossError(
                f"{self.consecutive[which]} consecutive {'generator' if which == 'g' else 'discriminator'} steps were "
                f"skipped because of non-finite values (last culprit: {names}); stopping. Lower the learning rate, "
                f"check the data, or raise max_skips."
            )

    def state_dict(self) -> dict:
        return {"consecutive": dict(self.consecutive), "total_skips": dict(self.total_skips)}

    def load_state_dict(self, state: dict) -> None:
        self.consecutive.update(state.get("consecutive", {}))
        self.total_skips.update(state.get("total_skips", {}))
