"""FSDP for frozen-base + LoRA modules (the StrSR DiT): a wrap policy, per-network norm clipping, and a strategy.

Plain ``ModuleWrapPolicy({TransformerBlock})`` fails on these models: a block holds the frozen bf16 base weights
*and* the fp32 LoRA factors, and FSDP flattens one unit into one tensor of one dtype ("Must flatten tensors with
uniform dtype"). The recipe here (peft's FSDP + LoRA recipe, plus replication of the small frozen networks):

- every transformer block is a unit (its frozen base weights, sharded);
- every leaf module that owns trainable parameters (LoRA A/B, condition MLP layers, discriminator heads) is its
  own unit, so each flat parameter has one dtype and one ``requires_grad``;
- the frozen networks outside the blocks (VAE, VLM, discriminator backbone, loss networks: many of them called
  through methods other than ``forward``, which FSDP would not unshard) are ``ignored_states``: replicated on
  every rank like under DDP, moved to the device here.

A parameter that does not require grad during a forward gets no gradient from that forward: plain autograd and DDP
honour this, FSDP does not. Its units run on views of a flat parameter that still requires grad, so the generator
step's adversarial term, computed through the discriminator heads frozen with ``requires_grad_(False)``, would
land in the heads' gradients and be applied by the next discriminator step. :class:`FrozenUnitGrads` (used by
:class:`LoRAFSDPStrategy` around every backward) notes which trainable units ran frozen and gives them back the
gradients they held before the backward.

Lightning 2.6's ``FSDPPrecision.clip_grad_by_norm`` raises (``LightningModule.clip_gradients(opt, v, "norm")`` does
not work under FSDP), and ``FullyShardedDataParallel.clip_grad_norm_`` clips *every* gradient of the root, which
mixes the generator's and the discriminator's norms whenever both hold gradients (accumulation windows).
:class:`ShardedClipPrecision` clips exactly the optimizer's parameters with the global (all-shards) norm.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from lightning.fabric.strategies.fsdp import _setup_activation_checkpointing
from lightning.pytorch.plugins.precision import FSDPPrecision
from lightning.pytorch.strategies import FSDPStrategy
from torch import Tensor, nn
from torch.distributed.fsdp import FullStateDictConfig, FullyShardedDataParallel, StateDictType
from torch.distributed.fsdp._runtime_utils import _post_backward_final_callback
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

__all__ = ["DIT_BLOCKS", "FrozenUnitGrads", "LoRAWrapPolicy", "LoRAFSDPStrategy", "ShardedClipPrecision",
           "clip_sharded_grad_norm_", "frozen_outside_units", "gathered_state"]

DIT_BLOCKS = (
    "diffusers.models.transformers.transformer_flux2.Flux2TransformerBlock",
    "diffusers.models.transformers.transformer_flux2.Flux2SingleTransformerBlock",
    "diffusers.models.transformers.transformer_z_image.ZImageTransformerBlock",
)


def _import_classes(paths: Iterable[str]) -> tuple[type[nn.Module], ...]:
    """Classes from dotted paths; a path whose module is missing (older diffusers) is skipped."""
    classes = []
    for path in paths:
        module, _, name = path.rpartition(".")
        try:
            classes.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(classes)


def _owns_trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters(recurse=False))


class LoRAWrapPolicy(ModuleWrapPolicy):
    """FSDP units: every ``block_classes`` module and every module owning trainable parameters directly."""

    def __init__(self, block_classes: Sequence[str] = DIT_BLOCKS) -> None:
        self.block_paths = tuple(block_classes)
        super().__init__(_import_classes(self.block_paths))

    def is_unit(self, module: nn.Module) -> bool:
        return isinstance(module, tuple(self._module_classes)) or _owns_trainable(module)

    def _run_policy(self, root_module: nn.Module, ignored_modules: set[nn.Module],
                    root_kwargs: dict[str, Any]) -> dict[nn.Module, dict[str, Any]]:
        return {m: dict(root_kwargs) for m in root_module.modules() if m not in ignored_modules and self.is_unit(m)}

    def __call__(self, module: nn.Module, recurse: bool, *args: Any, **kwargs: Any) -> bool:  # legacy interface
        return True if recurse else self.is_unit(module)


def frozen_outside_units(root: nn.Module, policy: LoRAWrapPolicy) -> list[nn.Module]:
    """Largest subtrees of ``root`` outside the blocks with parameters or buffers, no trainable parameter and no FSDP
    unit inside: the frozen networks to replicate (``ignored_states``)."""
    qualifies: dict[nn.Module, bool] = {}

    def visit(module: nn.Module) -> bool:  # post-order: a module qualifies if it and all its children do
        children = [visit(child) for child in module.children()]
        ok = all(children) and not policy.is_unit(module) and not _owns_trainable(module)
        qualifies[module] = ok
        return ok

    visit(root)
    out: list[nn.Module] = []

    blocks = tuple(policy._module_classes)

    def collect(module: nn.Module) -> None:
        if isinstance(module, blocks):  # a block is sharded whole: its frozen base weights are the point of FSDP
            return
        if qualifies[module] and module is not root:
            if any(True for _ in module.parameters()) or any(True for _ in module.buffers()):
                out.append(module)
            return
        for child in module.children():
            collect(child)

    collect(root)
    return out


@torch.no_grad()
def clip_sharded_grad_norm_(root: FullyShardedDataParallel, params: Iterable[Tensor], max_norm: float) -> Tensor:
    """Scale the gradients of ``params`` so that their global L2 norm is at most ``max_norm``; returns the norm.

    As ``FullyShardedDataParallel.clip_grad_norm_`` (same sharded / non-sharded split, same reduction), restricted
    to ``params``. Needs ``use_orig_params=True`` (original parameters hold their local gradient shards).
    """
    params = list(params)
    wanted = {id(p) for p in params}
    sharded, seen = [], set()
    for handle in root._all_handles:  # private, stable since torch 2.1 (what clip_grad_norm_ itself walks)
        if handle.flat_param._params is None:
            raise ValueError("clip_sharded_grad_norm_ needs FSDP(use_orig_params=True)")
        for p in handle.flat_param._params:
            if id(p) in wanted and id(p) not in seen:
                seen.add(id(p))
                if handle.uses_sharded_strategy:
                    sharded.append(p)
    sharded_ids = {id(p) for p in sharded}
    replicated = [p for p in params if id(p) not in sharded_ids]  # NO_SHARD units, ignored states
    device = root.compute_device

    def sq(ps: list[Tensor]) -> Tensor:
        total = torch.zeros((), device=device, dtype=torch.float32)
        for p in ps:
            if p.grad is not None and p.grad.numel():
                total += p.grad.detach().float().pow(2).sum().to(device)
        return total

    total = sq(sharded)
    dist.all_reduce(total, group=root.process_group)  # shards -> global sum of squares
    total = (total + sq(replicated)).sqrt()
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for p in params:
        if p.grad is not None:
            p.grad.mul_(coef.to(p.grad.device, p.grad.dtype))
    return total


class FrozenUnitGrads:
    """Makes FSDP honour ``requires_grad_(False)`` set around a forward: a unit of trainable parameters whose latest
    grad-mode forward ran with all its parameters frozen keeps the gradient it held before the next backward.

    FSDP runs a unit on views of its flat parameter, which still requires grad, so autograd reaches the flat
    gradient even when the original parameters were frozen for that forward. :meth:`watch` hooks the units;
    :meth:`kept` wraps one backward (and FSDP's end-of-backward) and restores those units' flat gradients in place
    (the original parameters' ``.grad`` are views of them), zeroing the ones that had none. A unit run both frozen
    and trainable before one backward counts as its latest forward says. Needs ``use_orig_params=True``.
    """

    def __init__(self) -> None:
        self.ran_frozen: dict[FullyShardedDataParallel, bool] = {}

    def _note_forward(self, unit: FullyShardedDataParallel, args: Any) -> None:  # noqa: ARG002 - forward pre-hook
        if torch.is_grad_enabled():
            self.ran_frozen[unit] = not any(p.requires_grad for p in unit._handle.flat_param._params)

    def watch(self, root: nn.Module) -> None:
        """Hook every FSDP unit of ``root`` that holds trainable parameters (LoRA, MLP, heads)."""
        for unit in root.modules():
            handle = getattr(unit, "_handle", None) if isinstance(unit, FullyShardedDataParallel) else None
            if handle is not None and handle.flat_param.requires_grad and handle.flat_param._params is not None:
                unit.register_forward_pre_hook(self._note_forward)

    @contextmanager
    def kept(self) -> Iterator[None]:
        frozen = [unit._handle.flat_param for unit, was in self.ran_frozen.items() if was]
        self.ran_frozen = {}
        before = [None if flat.grad is None else flat.grad.clone() for flat in frozen]
        yield
        with torch.no_grad():
            for flat, grad in zip(frozen, before):
                if flat.grad is not None:
                    flat.grad.zero_() if grad is None else flat.grad.copy_(grad)


class ShardedClipPrecision(FSDPPrecision):
    """``FSDPPrecision`` whose norm clipping works: the optimizer's own parameters, global norm over shards."""

    strategy: FSDPStrategy | None = None

    def clip_grad_by_norm(self, optimizer: torch.optim.Optimizer, clip_val: int | float) -> None:
        if self.scaler is not None:
            raise ValueError("norm clipping with fp16 loss scaling is not supported here; use precision bf16-mixed")
        root = self.strategy.model if self.strategy is not None else None
        if not isinstance(root, FullyShardedDataParallel):
            raise RuntimeError("ShardedClipPrecision is set up by LoRAFSDPStrategy; the model is not FSDP-wrapped")
        params = [p for group in optimizer.param_groups for p in group["params"]]
        clip_sharded_grad_norm_(root, params, float(clip_val))


class LoRAFSDPStrategy(FSDPStrategy):
    """Lightning's ``FSDPStrategy`` with :class:`LoRAWrapPolicy`, replicated frozen networks, working norm clipping,
    ``use_orig_params=True`` (LoRA beside frozen weights; optimizers built from the original parameters) and full
    (rank-0, CPU-offloaded) checkpoints that the modules filter to trainable state (a sharded checkpoint would
    store the frozen base too, and could not be reloaded without it).

    Args:
        block_classes: dotted paths of the transformer block classes (default: FLUX.2 double/single, Z-Image).
        replicate_frozen: pass the frozen networks outside the blocks as ``ignored_states`` (see module docstring).
        **kwargs: ``FSDPStrategy`` arguments (``sharding_strategy``, ``cpu_offload``, ``activation_checkpointing_policy``...).
    """

    def __init__(self, block_classes: Sequence[str] = DIT_BLOCKS, replicate_frozen: bool = True,
                 state_dict_type: str = "full", use_orig_params: bool = True, **kwargs: Any) -> None:
        self.wrap_policy = kwargs.pop("auto_wrap_policy", None) or LoRAWrapPolicy(block_classes)
        super().__init__(auto_wrap_policy=self.wrap_policy, state_dict_type=state_dict_type,
                         use_orig_params=use_orig_params, **kwargs)
        self.replicate_frozen = replicate_frozen
        self.frozen_grads = FrozenUnitGrads()

    def backward(self, closure_loss: Tensor, optimizer: torch.optim.Optimizer | None, *args: Any,
                 **kwargs: Any) -> Tensor:
        """Backward (finished by :meth:`post_backward`), keeping the gradients of units that ran frozen, e.g. the
        discriminator heads in the generator step (:class:`FrozenUnitGrads`)."""
        with self.frozen_grads.kept():
            return super().backward(closure_loss, optimizer, *args, **kwargs)

    def post_backward(self, closure_loss: Tensor) -> None:
        """Finish FSDP's backward now. Manual optimisation calls backward *inside* the root module's forward
        (``training_step``), and FSDP queues its end-of-backward callback only from hooks on the root forward's
        outputs, so it would never run: gradients would not be finalised and units would stay in BACKWARD_POST
        (state_dict and clipping then fail). Requires an empty root unit, which ``_setup_model`` ensures."""
        super().post_backward(closure_loss)
        root = self.model
        if isinstance(root, FullyShardedDataParallel) and not getattr(root, "_post_backward_callback_queued", False):
            if root._handle is not None and root._handle.flat_param.numel() > 0:
                raise RuntimeError("LoRAFSDPStrategy: the root FSDP unit holds parameters; use replicate_frozen=true")
            _post_backward_final_callback(root, root)

    def setup(self, trainer: Any) -> None:
        plugin = self.precision_plugin
        if type(plugin) is FSDPPrecision:  # swap in the plugin whose norm clipping works
            self.precision_plugin = ShardedClipPrecision(plugin.precision, plugin.scaler)
        if isinstance(self.precision_plugin, ShardedClipPrecision):
            self.precision_plugin.strategy = self
        super().setup(trainer)

    def _setup_model(self, model: nn.Module) -> nn.Module:
        if self.replicate_frozen and "ignored_states" not in self.kwargs and isinstance(self.wrap_policy, LoRAWrapPolicy):
            frozen = frozen_outside_units(model, self.wrap_policy)
            for module in frozen:  # FSDP leaves ignored states where they are
                module.to(self.root_device)
            covered = {id(p) for m in frozen for p in m.parameters()}
            units = [m for m in model.modules() if self.wrap_policy.is_unit(m)]
            covered |= {id(p) for m in units for p in m.parameters()}
            stray = [p for p in model.parameters() if id(p) not in covered]  # frozen, on containers of units
            if stray:  # the root unit must stay empty (see post_backward); ignore them too, as parameters
                for p in stray:
                    p.data = p.data.to(self.root_device)
                self.kwargs["ignored_states"] = [p for m in frozen for p in m.parameters()] + stray
            else:
                self.kwargs["ignored_states"] = frozen
        if self.root_device.type != "cpu" or any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            model = super()._setup_model(model)
            self.frozen_grads.watch(model)
            return model
        # CPU (gloo) runs, for tests and debugging: Lightning passes device_id=None, which FSDP refuses without GPUs
        model = FullyShardedDataParallel(module=model, cpu_offload=self.cpu_offload,
                                         mixed_precision=self.mixed_precision_config,
                                         sharding_strategy=self.sharding_strategy, device_id=self.root_device,
                                         **self.kwargs)
        _setup_activation_checkpointing(model, self._activation_checkpointing_kwargs)
        self.frozen_grads.watch(model)
        return model


@contextmanager
def gathered_state(model: nn.Module | None, is_global_zero: bool) -> Iterator[bool]:
    """For exporting weights of a possibly FSDP-sharded ``model`` (``trainer.strategy.model``): inside,
    ``state_dict()`` of any of its submodules returns full tensors on rank 0 (on CPU) and empty ones elsewhere.
    Under FSDP it must be entered on *every* rank (the gathers are collectives); yields whether this rank writes."""
    if not isinstance(model, FullyShardedDataParallel):
        yield is_global_zero
        return
    config = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
    with FullyShardedDataParallel.state_dict_type(model, StateDictType.FULL_STATE_DICT, config):
        yield is_global_zero
