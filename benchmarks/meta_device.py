"""Meta tensors that behave like tensors of a target device, and meters for one step on them.

PyTorch's meta device has shapes and dtypes but no data, no autocast backend and an attention dispatch of its own
(``scaled_dot_product_attention`` falls back to the math kernel there, which materialises the (B, H, L, L) matrix).
:class:`TargetDevice` makes a meta run follow what the *target* device would do:

- ``"cuda"``: CUDA autocast's casting rules while an (emulated) ``torch.autocast`` region is enabled (the op lists of
  PyTorch's "Autocast Op Reference": lower-precision, float32 and promote ops), with autocast's cast cache for
  leaf tensors that require grad; attention through the fused flash kernel (memory-efficient kernel with a mask);
- ``"cpu"``: no autocast (the CPU runs here are fp32), attention through the CPU flash kernel, as PyTorch picks
  them on those devices.

``torch.autocast`` itself rejects the meta device, so while a :class:`TargetDevice` is active ``torch.autocast`` is
replaced by :class:`_EmulatedAutocast`, which records enabled / disabled regions for the emulation (the modules'
own ``torch.autocast(device_type=x.device.type, enabled=False)`` regions included).

Meters (all on the same dispatch level as the real allocator sees tensors):

- :class:`LiveBytes`: bytes of every storage created by an op while it is alive (weak references; sizes rounded up
  to the CUDA caching allocator's 512-byte blocks), the running total and its peak;
- :class:`SavedBytes`: bytes of the distinct storages autograd keeps for backward (``saved_tensors_hooks``),
  excluding parameters and buffers, which are resident anyway.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map, tree_map_only
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["TargetDevice", "LiveBytes", "SavedBytes", "storage_bytes", "rounded"]

# CUDA autocast op lists (PyTorch docs, "Autocast Op Reference", CUDA ops), matched by Python function name. einsum
# and the composite norms are listed because their inner aten ops (bmm, layer_norm, ...) are autocast there.
_LOWER = frozenset("""__matmul__ __rmatmul__ addbmm addmm addmv addr baddbmm bmm chain_matmul multi_dot conv1d conv2d
    conv3d conv_transpose1d conv_transpose2d conv_transpose3d conv_tbc linear matmul mm mv prelu einsum
    scaled_dot_product_attention""".split())
_FP32 = frozenset("""__pow__ __rdiv__ __rpow__ __rtruediv__ acos asin binary_cross_entropy_with_logits cosh
    cosine_embedding_loss cdist cosine_similarity cross_entropy cumprod cumsum dist erfinv exp expm1 group_norm
    hinge_embedding_loss kl_div l1_loss layer_norm log log_softmax log10 log1p log2 margin_ranking_loss mse_loss
    multilabel_margin_loss multi_margin_loss nll_loss norm normalize pdist poisson_nll_loss pow prod reciprocal
    rsqrt sinh smooth_l1_loss soft_margin_loss softmax softmin softplus sum renorm tan triplet_margin_loss""".split())
_PROMOTE = frozenset("addcdiv addcmul atan2 bilinear cross dot grid_sample index_put scatter_add tensordot cat "
                     "stack".split())
_HALF = (torch.bfloat16, torch.float16)
_ACTIVE: list[TargetDevice] = []


def rounded(nbytes: int) -> int:
    """Bytes the CUDA caching allocator hands out for a request: multiples of 512."""
    return -(-int(nbytes) // 512) * 512


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Total bytes of the distinct storages behind ``tensors`` (views and shared weights counted once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        st = t.untyped_storage()
        seen[id(st)] = rounded(st.nbytes())
    return sum(seen.values())


class _EmulatedAutocast:
    """Stands in for ``torch.autocast`` inside a :class:`TargetDevice`: any device type (meta included)."""

    def __init__(self, device_type: str = "cuda", dtype: torch.dtype | None = None, enabled: bool = True,
                 cache_enabled: bool | None = None) -> None:
        self.enabled, self.dtype = bool(enabled), dtype

    def __enter__(self) -> _EmulatedAutocast:
        _ACTIVE[-1].push(self.enabled, self.dtype)
        return self

    def __exit__(self, *exc: Any) -> None:
        _ACTIVE[-1].pop()

    def __call__(self, fn: Any) -> Any:  # used as a decorator
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with self:
                return fn(*args, **kwargs)
        return wrapped


class TargetDevice(TorchFunctionMode):
    """Meta tensors follow the target's autocast rules and attention kernels (see the module docstring)."""

    def __init__(self, target: str = "cuda") -> None:
        super().__init__()
        if target not in ("cuda", "cpu"):
            raise ValueError(f"target must be 'cuda' or 'cpu', got {target!r}")
        self.target = target
        self.stack: list[tuple[bool, torch.dtype]] = []
        self.cache: dict[int, tuple[weakref.ref, torch.Tensor]] = {}
        self._saved_autocast: Any = None

    # -- emulated autocast regions --
    def push(self, enabled: bool, dtype: torch.dtype | None) -> None:
        outer = self.stack[-1][1] if self.stack else torch.bfloat16
        self.stack.append((enabled and self.target == "cuda", dtype or outer))

    def pop(self) -> None:
        self.stack.pop()
        if not self.stack:
            self.cache.clear()

    @property
    def low_dtype(self) -> torch.dtype | None:
        return self.stack[-1][1] if self.stack and self.stack[-1][0] else None

    def __enter__(self) -> TargetDevice:
        import torch.utils.checkpoint as ckpt

        _ACTIVE.append(self)
        self._saved_autocast, self._saved_checkpoint = torch.autocast, ckpt._checkpoint_without_reentrant_generator_impl
        torch.autocast = _EmulatedAutocast  # type: ignore[misc,assignment]
        ckpt._checkpoint_without_reentrant_generator_impl = self._checkpoint
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        import torch.utils.checkpoint as ckpt

        super().__exit__(*exc)
        torch.autocast = self._saved_autocast  # type: ignore[misc]
        ckpt._checkpoint_without_reentrant_generator_impl = self._saved_checkpoint
        _ACTIVE.pop()

    # -- casting --
    def _cast(self, t: Any, dtype: torch.dtype) -> Any:
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dtype == dtype:
            return t
        if t.is_leaf and t.requires_grad:  # autocast caches casts of leaf tensors that require grad
            hit = self.cache.get(id(t))
            if hit is not None and hit[0]() is t and hit[1].dtype == dtype:
                return hit[1]
            out = t.to(dtype)
            self.cache[id(t)] = (weakref.ref(t), out)
            return out
        return t.to(dtype)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        low = self.low_dtype
        if low is not None:
            if name in _LOWER:
                args, kwargs = tree_map(lambda t: self._cast(t, low), (args, kwargs))
            elif name in _FP32:
                args, kwargs = tree_map(lambda t: self._cast(t, torch.float32) if isinstance(t, torch.Tensor)
                                        and t.dtype in _HALF else t, (args, kwargs))
            elif name in _PROMOTE:
                floats = [t.dtype for t in _tensors((args, kwargs)) if t.is_floating_point()]
                if len(set(floats)) > 1:
                    widest = torch.float32 if torch.float32 in floats else floats[0]
                    args, kwargs = tree_map(lambda t: self._cast(t, widest), (args, kwargs))
        if name == "scaled_dot_product_attention":
            return self._attention(*args, **kwargs)
        return func(*args, **kwargs)

    # -- activation checkpointing: the backward runs without function modes, so a recomputation (non-reentrant
    # checkpoint, as diffusers and timm use) re-enters this one with the autocast state of its forward --
    def _checkpoint(self, fn: Any, args: Any, kwargs: Any, *, context_fn: Any = None, **options: Any) -> Any:
        stack = list(self.stack)
        user = context_fn or _noop_contexts

        def contexts() -> tuple[Any, Any]:
            forward, recompute = user()
            return forward, _both(recompute, self._recomputing(stack))

        return self._saved_checkpoint(fn, args, kwargs, context_fn=contexts, **options)

    @contextlib.contextmanager
    def _recomputing(self, stack: list[tuple[bool, torch.dtype]]) -> Iterator[None]:
        saved, self.stack = self.stack, list(stack)
        TorchFunctionMode.__enter__(self)
        try:
            yield
        finally:
            TorchFunctionMode.__exit__(self, None, None, None)
            self.stack = saved

    def _attention(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0, is_causal: bool = False,
                   scale: float | None = None, enable_gqa: bool = False) -> torch.Tensor:
        """The fused kernel the target device would pick (flash; memory-efficient with a mask on CUDA)."""
        q, k, v = query, key, value
        if enable_gqa and k.shape[-3] != q.shape[-3]:
            rep = q.shape[-3] // k.shape[-3]
            k, v = k.repeat_interleave(rep, dim=-3), v.repeat_interleave(rep, dim=-3)
        aten = torch.ops.aten
        if self.target == "cpu":
            return aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, dropout_p, is_causal,
                                                                    attn_mask=attn_mask, scale=scale)[0]
        if attn_mask is None and q.dtype in _HALF and q.shape[-1] <= 256:
            return aten._scaled_dot_product_flash_attention(q, k, v, dropout_p, is_causal, False, scale=scale)[0]
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        return aten._scaled_dot_product_efficient_attention(q, k, v, attn_mask, grad, dropout_p, is_causal,
                                                            scale=scale)[0]


def _noop_contexts() -> tuple[Any, Any]:
    return contextlib.nullcontext(), contextlib.nullcontext()


@contextlib.contextmanager
def _both(first: Any, second: Any) -> Iterator[None]:
    with first, second:
        yield


def _tensors(tree: Any) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    tree_map_only(torch.Tensor, out.append, tree)
    return out


class LiveBytes(TorchDispatchMode):
    """Running total and peak of the bytes of storages created by ops (a caching allocator without fragmentation).

    ``known``: tensors alive before (parameters, buffers, gradients, optimizer states, inputs); ops that return
    views of them allocate nothing. ``phase`` labels the current part of the step; :attr:`peaks` holds the peak reached in each phase."""

    def __init__(self, known: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.live: WeakIdKeyDictionary = WeakIdKeyDictionary()
        for t in known:  # storages that exist already (parameters, ...): their views are not allocations
            self.live[t.untyped_storage()] = 0
        self.current = 0
        self.peak = 0
        self.phase = "other"
        self.peaks: dict[str, int] = {}

    def _free(self, nbytes: int) -> None:
        self.current -= nbytes

    def _track(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        if st in self.live:
            return
        n = rounded(st.nbytes())
        self.live[st] = n
        weakref.finalize(st, self._free, n)
        self.current += n
        self.peak = max(self.peak, self.current)
        self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), self.current)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        tree_map_only(torch.Tensor, self._track, out)
        return out

    def enter(self, phase: str) -> None:
        """Start ``phase``; the peak of the ``"pending"`` work before it (e.g. the generator forward) is its."""
        self.peaks[phase] = max(self.peaks.get(phase, 0), self.peaks.pop("pending", 0))
        self.phase = phase


class SavedBytes:
    """Bytes of the distinct non-parameter storages saved for backward, per phase (``saved_tensors_hooks``)."""

    def __init__(self, modules: Iterable[nn.Module]) -> None:
        self.resident = WeakIdKeyDictionary()
        for module in modules:
            for t in list(module.parameters()) + list(module.buffers()):
                self.resident[t.untyped_storage()] = True
        self.phase = "other"
        self.seen: dict[str, WeakIdKeyDictionary] = {}
        self.bytes: dict[str, int] = {}
        self.labels: list[str] = []  # the component running now (innermost last), see :meth:`label`
        self.by_component: dict[str, int] = {}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st not in self.resident:
            seen = self.seen.setdefault(self.phase, WeakIdKeyDictionary())
            if st not in seen:
                seen[st] = True
                n = rounded(st.nbytes())
                self.bytes[self.phase] = self.bytes.get(self.phase, 0) + n
                key = f"{self.phase if self.phase != 'pending' else '?'}:{self.labels[-1] if self.labels else 'other'}"
                self.by_component[key] = self.by_component.get(key, 0) + n
        return t

    @contextlib.contextmanager
    def label(self, components: dict[str, nn.Module]) -> Iterator[None]:
        """Attribute saved bytes to the named submodule whose forward is running (``by_component``)."""
        def enter(name: str) -> Any:
            return lambda module, args: self.labels.append(name)  # returns None: the input is unchanged

        def leave(module: nn.Module, args: Any, output: Any) -> None:
            self.labels.pop()

        handles = []
        for name, module in components.items():
            handles.append(module.register_forward_pre_hook(enter(name)))
            handles.append(module.register_forward_hook(leave, always_call=True))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def enter(self, phase: str) -> None:
        """Start ``phase``; what the ``"pending"`` work before it saved (e.g. the generator forward) is its."""
        pending = self.seen.pop("pending", None)
        if pending is not None:
            seen = self.seen.setdefault(phase, WeakIdKeyDictionary())
            for st in list(pending.keys()):
                seen[st] = True
        self.bytes[phase] = self.bytes.get(phase, 0) + self.bytes.pop("pending", 0)
        for key in [k for k in self.by_component if k.startswith("?:")]:
            new = f"{phase}:{key[2:]}"
            self.by_component[new] = self.by_component.get(new, 0) + self.by_component.pop(key)
        self.phase = phase

    @contextlib.contextmanager
    def hooks(self) -> Iterator[SavedBytes]:
        with torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t):
            yield self
