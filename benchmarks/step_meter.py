"""Build a module from a merged config and run real training batches through its own code, with meters.

:func:`build_module` instantiates the ``model`` section of a config exactly as the CLI does (jsonargparse), under
``torch.device(device)``: on ``"meta"`` every network exists at full size without memory. :func:`attach_trainer`
gives the module the minimal Lightning plumbing its ``training_step`` uses (optimizers from its own
``configure_optimizers``, ``manual_backward``, ``clip_gradients``, the batch counter); logging is switched off. On
meta tensors nothing has values, so the non-finite guard (which reads values) always passes.

:func:`run_batches` calls ``training_step`` on synthetic batches and measures, per *phase*, under
``FlopCounterMode`` (one run) and :class:`~benchmarks.meta_device.SavedBytes` and
:class:`~benchmarks.meta_device.LiveBytes` (a second run of the same batches):
``"G"`` is everything of a batch up to and including ``generator_update`` (the generator forward, its loss and
backward, the generator step), ``"D"`` is ``discriminator_update`` (and, on a discriminator-only batch, the
generator forward without grad that precedes it).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.meta_device import LiveBytes, SavedBytes, TargetDevice, storage_bytes
from lightning_modules.guard import NonFiniteGuard

__all__ = ["build_module", "attach_trainer", "synthetic_batch", "run_batches", "resident_bytes", "PHASES"]

PHASES = ("G", "D")


def build_module(model_cfg: dict[str, Any], device: str = "meta") -> L.LightningModule:
    """The LightningModule of a config's ``model`` section (``class_path`` + ``init_args``), built by jsonargparse
    as ``onestep_sr.cli`` builds it, with every tensor created on ``device`` (then moved there, as Lightning does)."""
    import warnings

    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(L.LightningModule, "model", required=True)
    namespace = parser.parse_object({"model": model_cfg})
    with warnings.catch_warnings(), torch.device(device):
        warnings.simplefilter("ignore")
        model = parser.instantiate(namespace).model
    return model.to(device)  # as Lightning's strategy does before training (a no-op when everything is there)


class _ShapeOnlyGuard(NonFiniteGuard):
    """Meta tensors carry no values to check: every loss and gradient counts as finite."""

    def check_loss(self, which: str, loss: Tensor, terms: dict[str, Tensor]) -> bool:
        return True if loss.is_meta else super().check_loss(which, loss, terms)

    def check_grads(self, which: str, params) -> bool:  # noqa: ANN001
        params = list(params)
        if any(p.is_meta for p in params):
            return which not in self._poisoned
        return super().check_grads(which, params)


def attach_trainer(model: L.LightningModule) -> L.Trainer:
    """A CPU ``Trainer`` connected to ``model`` without a loop: its optimizers come from ``configure_optimizers``
    (so ``model.optimizers()``, ``manual_backward`` and ``clip_gradients`` work); ``log`` / ``log_dict`` do
    nothing; the guard is :class:`_ShapeOnlyGuard`. Autocast is not Lightning's here: the caller enters it."""
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, precision="32-true")
    trainer.strategy.connect(model)
    model.trainer = trainer
    trainer.strategy.optimizers = list(model.configure_optimizers())
    model.log = model.log_dict = lambda *args, **kwargs: None  # no loop collects results here
    guard = _ShapeOnlyGuard(model.guard.max_skips)
    guard.__dict__.update({k: v for k, v in model.guard.__dict__.items() if k != "max_skips"})
    model.guard = guard
    return trainer


def synthetic_batch(crop: int, scale: int = 4, device: str = "meta", cond: tuple[int, int] | None = None,
                    batch: int = 1, seed: int = 0) -> dict[str, Tensor]:
    """A training batch as the data pipeline makes it: ``gt`` (B, 3, crop, crop) and ``lq`` (B, 3, crop/scale,
    crop/scale) in [0, 1]; ``cond_features`` (B, L, D) when ``cond = (L, D)`` (a feature cache)."""
    g = torch.Generator().manual_seed(seed)
    out = {"gt": torch.rand(batch, 3, crop, crop, generator=g), "lq": torch.rand(batch, 3, crop // scale,
                                                                                   crop // scale, generator=g)}
    if cond is not None:
        out["cond_features"] = torch.randn(batch, *cond, generator=g)
    return {k: v.to(device) for k, v in out.items()}


def resident_bytes(model: L.LightningModule) -> dict[str, int]:
    """Bytes held between steps: parameters, buffers, gradients and optimizer states (distinct storages)."""
    params = list(model.parameters())
    out = {"params": storage_bytes(params), "buffers": storage_bytes(list(model.buffers())),
           "grads": storage_bytes([p.grad for p in params if p.grad is not None]), "optimizer": 0}
    if model._trainer is not None:
        states = [t for opt in model.trainer.optimizers for s in opt.state.values() for t in s.values()
                  if isinstance(t, Tensor) and t.numel() > 1]
        out["optimizer"] = storage_bytes(states)
    return out


#: submodules whose saved activations are reported separately (those a module has; matched by qualified name)
COMPONENTS = ("generator.unet", "generator.vae.encoder", "generator.vae.decoder", "generator.backend.transformer",
              "generator.backend.vae.encoder", "generator.backend.vae.decoder", "generator.condition", "generator.mlp",
              "discriminator.backbone", "discriminator.heads")


def components(model: L.LightningModule) -> dict[str, torch.nn.Module]:
    """The :data:`COMPONENTS` the model has, plus every reconstruction term (``reconstruction.terms.<name>``)."""
    named = dict(model.named_modules())
    out = {name: named[name] for name in COMPONENTS if name in named}
    terms = named.get("reconstruction.terms")
    if terms is not None:
        out |= {f"loss.{name}": module for name, module in terms.named_children()}
    return out


def _set_counter(trainer: L.Trainer, counter: int) -> None:
    trainer.fit_loop.epoch_loop.batch_progress.total.ready = counter + 1  # total_batch_idx = counter


def _wrap_phase(model: L.LightningModule, name: str, phase: str, meters: list[Any], flops: FlopCounterMode | None,
                marks: list[tuple[str, int]]) -> Callable[[], None]:
    """Mark ``model.<name>`` (``generator_update`` / ``discriminator_update``) as phase ``phase`` for the meters."""
    original = getattr(model, name)

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if flops is not None:  # the work before it (the generator forward) is this phase's
            marks.append((phase, flops.get_total_flops()))
        for meter in meters:
            meter.enter(phase)
        try:
            return original(*args, **kwargs)
        finally:
            if flops is not None:
                marks.append(("end:" + phase, flops.get_total_flops()))
            for meter in meters:
                meter.phase = "pending"

    setattr(model, name, wrapped)
    return lambda: delattr(model, name)


def run_batches(model: L.LightningModule, batches: list[tuple[dict[str, Tensor], int]], target: str = "cuda",
                rebuild: list[int] | tuple[int, ...] = ()) -> dict[str, Any]:
    """Measure ``training_step`` on each ``(batch, counter)`` (``counter``: the module's batch counter, which
    decides accumulation windows and G/D alternation) in a steady state.

    The batches run twice: first under ``FlopCounterMode`` (FLOPs per phase; this run also creates the optimizer
    states), then, after the batches of the counters ``rebuild`` (unmeasured: e.g. an accumulation batch, so that
    a measured optimizer step starts with the window's gradients, as in training), under the memory meters.
    FlopCounterMode's module tracking keeps tensors of activation-checkpoint recomputations alive, so it never
    runs while memory is measured.

    ``target="cuda"``: bf16 autocast emulated as Lightning's ``bf16-mixed`` enters it; ``"cpu"``: fp32, no
    autocast. A meta model runs under :class:`~benchmarks.meta_device.TargetDevice`.

    Returns ``{"G": {...}, "D": {...}, "resident_before": {...}, "peak_bytes": int, "saved_by_component": {...}}``
    with, per phase, ``flops``, ``saved_bytes`` (kept for backward, summed over the phase's updates),
    ``peak_bytes`` (resident bytes before the measured batches + the live peak reached in that phase) and
    ``updates`` (how many of its update calls ran)."""
    trainer = model.trainer
    model.train()

    def run(items: list[tuple[dict[str, Tensor], int]], flops: FlopCounterMode | None = None,
            marks: list[tuple[str, int]] | None = None, meters: tuple[Any, ...] = ()) -> None:
        for batch, counter in items:
            _set_counter(trainer, counter)
            for meter in meters:
                meter.phase = "pending"
            if flops is not None and marks is not None:
                marks.append(("start", flops.get_total_flops()))
            with _autocast(target):
                model.training_step(batch, counter)
            if flops is not None and marks is not None:
                marks.append(("stop", flops.get_total_flops()))

    emulate = TargetDevice(target) if _any_meta(model) else contextlib.nullcontext()
    with emulate:
        flops, marks = FlopCounterMode(display=False), []
        undo = [_wrap_phase(model, name, phase, [], flops, marks) for name, phase in _UPDATES]
        try:
            with flops:
                run(batches, flops, marks)
        finally:
            for fn in undo:
                fn()
        run([(batches[0][0], c) for c in rebuild])
        resident = resident_bytes(model)
        base = sum(resident.values())
        live, saved = LiveBytes(known=_known_tensors(model, batches)), SavedBytes([model])
        undo = [_wrap_phase(model, name, phase, [live, saved], None, []) for name, phase in _UPDATES]
        try:
            with live, saved.hooks(), saved.label(components(model)):
                run(batches, meters=(live, saved))
        finally:
            for fn in undo:
                fn()
    counts = {"G": 0, "D": 0}
    phase_flops = _attribute(marks, counts)
    result: dict[str, Any] = {"resident_before": resident, "peak_bytes": base + live.peak,
                              "saved_by_component": dict(sorted(saved.by_component.items()))}
    for phase in PHASES:
        result[phase] = {"flops": phase_flops.get(phase, 0), "saved_bytes": saved.bytes.get(phase, 0),
                         "peak_bytes": base + live.peaks.get(phase, 0), "updates": counts[phase]}
    return result


_UPDATES = (("generator_update", "G"), ("discriminator_update", "D"))


def _attribute(marks: list[tuple[str, int]], counts: dict[str, int]) -> dict[str, int]:
    """FLOPs per phase from the counter marks: work before a phase's update (the generator forward) and inside it
    belongs to it; work after the last update of a batch (none in these modules) to the last phase."""
    out: dict[str, int] = {}
    last_mark, last_phase = 0, None
    pending = 0
    for label, total in marks:
        if label == "start":
            last_mark, pending = total, 0
        elif label in PHASES:
            pending += total - last_mark
            last_mark = total
        elif label.startswith("end:"):
            phase = label[4:]
            out[phase] = out.get(phase, 0) + pending + total - last_mark
            counts[phase] += 1
            last_mark, pending, last_phase = total, 0, phase
        elif label == "stop" and last_phase is not None:
            out[last_phase] = out.get(last_phase, 0) + total - last_mark
    return out


def _known_tensors(model: L.LightningModule, batches: list[tuple[dict[str, Tensor], int]]) -> list[Tensor]:
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [t for opt in model.trainer.optimizers for s in opt.state.values() for t in s.values()
                if isinstance(t, Tensor)]
    return tensors + [t for batch, _ in batches for t in batch.values() if isinstance(t, Tensor)]


def _any_meta(model: L.LightningModule) -> bool:
    return any(p.is_meta for p in model.parameters())


def _autocast(target: str) -> Any:
    """Lightning's ``bf16-mixed`` region on CUDA (emulated on meta); nothing for the fp32 CPU runs."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if target == "cuda" else contextlib.nullcontext()
