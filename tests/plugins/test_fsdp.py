"""plugins.fsdp in one process (gloo, world size 1): the LoRA wrap policy, the replicated frozen networks, per-network
clipping and the frozen-unit gradient restore. The two-process runs are in ``tests/test_distributed.py`` (slow)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

from plugins.fsdp import FrozenUnitGrads, LoRAWrapPolicy, clip_sharded_grad_norm_, frozen_outside_units


class Block(nn.Module):  # a transformer block: frozen base + LoRA factors
    def __init__(self) -> None:
        super().__init__()
        self.base = nn.Linear(8, 8).requires_grad_(False)
        self.lora_A, self.lora_B = nn.Linear(8, 2, bias=False), nn.Linear(2, 8, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_B(self.lora_A(x))


class Vae(nn.Module):  # frozen, called through a method other than forward
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(8, 8).requires_grad_(False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x)


class Model(nn.Module):
    """Generator (VAE + blocks) and a "discriminator head" trained by a second optimizer. ``frozen_head``: the
    generator step, the head frozen around its call inside the root forward (as ``frozen_discriminator`` does
    inside ``training_step``)."""

    def __init__(self) -> None:
        super().__init__()
        self.vae, self.blocks = Vae(), nn.Sequential(Block(), Block())
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor, frozen_head: bool = False) -> torch.Tensor:
        h = self.blocks(self.vae.encode(x))
        if not frozen_head:
            return self.head(h).pow(2).mean()
        self.head.requires_grad_(False)
        try:
            return self.head(h).pow(2).mean()
        finally:
            self.head.requires_grad_(True)


POLICY = [f"{__name__}.Block"]
pytestmark = pytest.mark.filterwarnings("ignore:FSDP is switching to use `NO_SHARD`")  # world size 1


@pytest.fixture(scope="module")
def process_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    store = dist.FileStore(str(tmp_path_factory.mktemp("pg") / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def wrap(model: Model) -> FSDP:
    policy = LoRAWrapPolicy(POLICY)
    return FSDP(model, auto_wrap_policy=policy, use_orig_params=True, device_id=torch.device("cpu"),
                ignored_states=frozen_outside_units(model, policy))


def test_policy_units_and_replicated_frozen_networks() -> None:
    model = Model()
    policy = LoRAWrapPolicy(POLICY)
    units = {n for n, m in model.named_modules() if policy.is_unit(m)}
    assert units == {"blocks.0", "blocks.1", "blocks.0.lora_A", "blocks.0.lora_B", "blocks.1.lora_A",
                     "blocks.1.lora_B", "head"}
    assert [n for n, m in model.named_modules() if m in frozen_outside_units(model, policy)] == ["vae"]
    assert LoRAWrapPolicy(["no.such.module.Block"]).is_unit(model.blocks[0]) is False  # skipped, not an error


def test_per_network_clipping_uses_only_its_gradients(process_group: None) -> None:
    torch.manual_seed(0)
    plain, model = Model(), Model()
    model.load_state_dict(plain.state_dict())
    fsdp = wrap(model)
    x = torch.randn(4, 8)
    fsdp(x).backward()
    plain(x).backward()
    lora = [p for n, p in model.named_parameters() if "lora" in n]
    head_before = [p.grad.clone() for p in model.head.parameters()]
    norm = clip_sharded_grad_norm_(fsdp, lora, 1e-3)
    ref = torch.nn.utils.clip_grad_norm_([p for n, p in plain.named_parameters() if "lora" in n], 1e-3)
    assert float(norm) == pytest.approx(float(ref), rel=1e-5) and float(norm) > 1e-3
    for ours, theirs in zip(lora, (p for n, p in plain.named_parameters() if "lora" in n)):
        torch.testing.assert_close(ours.grad, theirs.grad)
    assert all(torch.equal(a, p.grad) for a, p in zip(head_before, model.head.parameters()))  # untouched


def generator_step(fsdp: FSDP, x: torch.Tensor, frozen_grads: FrozenUnitGrads | None) -> None:
    """Head frozen for its forward, backward after it (flags restored), with or without the restore."""
    loss = fsdp(x, frozen_head=True)
    if frozen_grads is None:
        loss.backward()
        return
    with frozen_grads.kept():
        loss.backward()


def test_frozen_unit_keeps_its_gradients(process_group: None) -> None:
    """FSDP ignores ``requires_grad_(False)`` on the original parameters during a forward (the flat parameter still
    requires grad); FrozenUnitGrads gives such a unit back the gradients it held before the backward."""
    torch.manual_seed(0)
    x_d, x_g = torch.randn(4, 8), torch.randn(4, 8)
    results = {}
    for restore in (False, True):
        torch.manual_seed(1)
        model = Model()
        fsdp = wrap(model)
        frozen_grads = FrozenUnitGrads()
        frozen_grads.watch(fsdp)
        with frozen_grads.kept():  # "discriminator step": the head is trained, nothing ran frozen
            fsdp(x_d).backward()
        head_d = [p.grad.clone() for p in model.head.parameters()]
        generator_step(fsdp, x_g, frozen_grads if restore else None)
        lora = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
        assert all(g is not None and g.abs().sum() > 0 for g in lora)  # the generator step did train the blocks
        results[restore] = [p.grad.clone() for p in model.head.parameters()], head_d
    leaked, head_d = results[False]
    assert not all(torch.equal(a, b) for a, b in zip(leaked, head_d))  # plain FSDP: the frozen head got a gradient
    kept, head_d = results[True]
    assert all(torch.equal(a, b) for a, b in zip(kept, head_d))
    # a unit with no gradient before the frozen forward ends with a zero one
    torch.manual_seed(1)
    model = Model()
    fsdp = wrap(model)
    frozen_grads = FrozenUnitGrads()
    frozen_grads.watch(fsdp)
    generator_step(fsdp, x_g, frozen_grads)
    assert all(p.grad is not None and not p.grad.any() for p in model.head.parameters())
    assert frozen_grads.ran_frozen == {}  # cleared by the backward
