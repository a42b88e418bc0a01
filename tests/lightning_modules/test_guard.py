"""NonFiniteGuard: a non-finite loss or gradient skips the step, and too many in a row stop the run, naming the term."""

import pytest
import torch

from lightning_modules.guard import NonFiniteGuard, NonFiniteLossError


def test_guard_skips_and_names_term():
    guard = NonFiniteGuard(max_skips=2)
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.ones(2)
    assert guard.check_loss("g", torch.tensor(1.0), {"mae": torch.tensor(1.0)})
    assert guard.check_grads("g", [p])
    guard.end_step("g", True)
    assert guard.consecutive["g"] == 0
    # a NaN loss poisons the window: no step even if the gradients look fine
    assert not guard.check_loss("g", torch.tensor(float("nan")), {"mae": torch.tensor(float("nan")), "gan": torch.tensor(0.0)})
    assert not guard.check_grads("g", [p])
    guard.end_step("g", False)
    assert guard.total_skips["g"] == 1
    # non-finite gradients alone also skip
    p.grad = torch.tensor([1.0, float("inf")])
    assert not guard.check_grads("g", [p])
    guard.end_step("g", False)
    guard.check_loss("g", torch.tensor(float("inf")), {"ea_dists": torch.tensor(float("inf"))})
    with pytest.raises(NonFiniteLossError, match="ea_dists"):
        guard.end_step("g", False)
