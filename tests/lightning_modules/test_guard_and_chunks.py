import pytest
import torch

from lightning_modules.guard import NonFiniteGuard, NonFiniteLossError
from lightning_modules.stage2 import chunk_grid


def test_chunk_grid_order_and_content():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    chunks = list(chunk_grid(x, 2))
    assert [(r, c) for r, c, _ in chunks] == [(0, 0), (0, 1), (1, 0), (1, 1)]  # left to right, top to bottom
    assert torch.equal(chunks[1][2], torch.tensor([[[[2.0, 3.0], [6.0, 7.0]]]]))
    assert torch.equal(torch.cat([torch.cat([chunks[0][2], chunks[1][2]], -1), torch.cat([chunks[2][2], chunks[3][2]], -1)], -2), x)


def test_chunk_grid_not_divisible_is_clear():
    with pytest.raises(ValueError, match="not divisible by the chunk size R=4"):
        list(chunk_grid(torch.zeros(1, 3, 6, 8), 4))


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
