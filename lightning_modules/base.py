"""Shared G/D plumbing for every one-step GAN module (TUDSR stage 1 and 2, StrSR).

The module owns the generator, the discriminator and the optimisation schedule; the loss objects own no trainable
network. Subclasses differ only in *when* ``generator_update`` / ``discriminator_update`` are called (per batch,
per chunk, alternating) and in ``infer`` (how an LQ image becomes an SR image at evaluation time). The networks and
the adversarial loss are typed against the protocols of :mod:`models.protocols` and :mod:`losses.protocols`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.core.optimizer import LightningOptimizer, do_nothing_closure
from torch import Tensor, nn

from losses.protocols import AdversarialLoss
from losses.weighted import WeightedLoss
from lightning_modules.guard import NonFiniteGuard
from lightning_modules.sr_steps import SRSteps, batch_scale
from models.protocols import Discriminator, OneStepGenerator
from models.resize import bicubic_upsample


_WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def clean_name(name: str) -> str:
    """A parameter name without the FSDP / activation-checkpointing / torch.compile wrapper segments, as in
    ``state_dict`` keys (FSDP's full state dict is keyed by the original names)."""
    for segment in _WRAPPER_SEGMENTS:
        name = name.replace(segment, "")
    return name


def _adamw(params: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=5e-5)


class OneStepGANModule(SRSteps, L.LightningModule):
    """Manual-optimisation GAN with gradient accumulation, clipping, a non-finite guard and trainable-only checkpoints.

    **Step axis:** ``trainer.global_step`` counts *generator* optimizer updates only. Discriminator updates go
    through :meth:`step_uncounted` (the strategy's optimizer step without Lightning's step-progress increment) and
    are counted in :attr:`discriminator_updates`. So ``max_steps``, ``ModelCheckpoint(every_n_train_steps)``, image
    logging, the loss schedule (``start_steps``) and the TensorBoard x-axis (every logged scalar carries
    ``step = global_step``) are all in generator updates. Both counters are saved in checkpoints.

    Evaluation (validation, test, predict) restores ``batch["lq"]`` at the scale the batch carries
    (``batch["scale"]``, from its ``EvalSet`` or ``data.predict_scale``); a batch without one is restored at
    :attr:`native_scale`.

    Args:
        generator: one-step generator (:class:`models.protocols.OneStepGenerator`).
        discriminator: multi-level discriminator (:class:`models.protocols.Discriminator`).
        reconstruction: weighted reconstruction/perceptual terms, ``(sr, gt, step) -> (loss, terms)``.
        adversarial: soft-label BCE or RaGAN (:class:`losses.protocols.AdversarialLoss`).
        gan_weight: weight of the adversarial generator term (TUDSR lambda2 = 0.5, StrSR 0.1).
        disc_weight: weight of the discriminator loss (TUDSR lambda2 = 0.5, StrSR 1).
        r1: optional approximated R1 penalty on real images (StrSR), ``(D, real, real_logits) -> loss``.
        optimizer_g: the generator's optimizer factory from YAML (``class_path: torch.optim.AdamW``).
        optimizer_d: the discriminator's optimizer factory, same form.
        accumulate: batches (or chunks) per optimizer step.
        grad_clip: max global grad norm per network (None: off).
        max_skips: consecutive non-finite steps tolerated before the run stops.
    """

    #: SR factor of evaluation and predict batches that carry no ``scale``: x4, the factor every training recipe
    #: here degrades at (TUDSR and StrSR both train at x4). Set ``data.predict_scale`` for another factor.
    native_scale: int = 4

    def __init__(
        self,
        generator: OneStepGenerator,
        discriminator: Discriminator,
        reconstruction: WeightedLoss,
        adversarial: AdversarialLoss,
        gan_weight: float = 0.5,
        disc_weight: float = 0.5,
        r1: nn.Module | None = None,
        optimizer_g: OptimizerCallable = _adamw,
        optimizer_d: OptimizerCallable = _adamw,
        accumulate: int = 1,
        grad_clip: float | None = 1.0,
        max_skips: int = 10,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints hold trainable weights only
        self.generator = generator
        self.discriminator = discriminator
        self.reconstruction = reconstruction
        self.adversarial = adversarial
        self.r1 = r1
        self.gan_weight = gan_weight
        self.disc_weight = disc_weight
        self.optimizer_g = optimizer_g
        self.optimizer_d = optimizer_d
        if accumulate < 1:
            raise ValueError(f"accumulate must be >= 1, got {accumulate}")
        self.accumulate = accumulate
        self.grad_clip = grad_clip
        self.guard = NonFiniteGuard(max_skips)
        #: discriminator optimizer updates applied so far (generator updates: ``trainer.global_step``)
        self.discriminator_updates = 0

    # ---------------------------------------------------------------- parameters and checkpoints
    def generator_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.generator.trainable_named_parameters()]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.discriminator.trainable_named_parameters()]

    def trainable_names(self) -> set[str]:
        names = {f"generator.{n}" for n, _ in self.generator.trainable_named_parameters()}
        names |= {f"discriminator.{n}" for n, _ in self.discriminator.trainable_named_parameters()}
        return {clean_name(n) for n in names}

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optimizer_g(self.generator_parameters()), self.optimizer_d(self.discriminator_parameters())]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only state owned by modules that own a trainable parameter (LoRA, MLP, heads + their SN buffers)."""
        owners = {name.rsplit(".", 1)[0] + "." for name in self.trainable_names()}
        state = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k: v for k, v in state.items() if k.rsplit(".", 1)[0] + "." in owners}
        checkpoint["guard"] = self.guard.state_dict()
        checkpoint["updates"] = {"generator": int(self.global_step), "discriminator": int(self.discriminator_updates)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "guard" in checkpoint:
            self.guard.load_state_dict(checkpoint["guard"])
        self.discriminator_updates = int(checkpoint.get("updates", {}).get("discriminator", 0))

    # ---------------------------------------------------------------- loss computations (shared by all schedules)
    @contextmanager
    def frozen_discriminator(self) -> Iterator[None]:
        """Generator step: heads in eval (no spectral-norm power iteration) and no grads to head weights;
        gradients still flow through D to the generator output. (FSDP ignores ``requires_grad_(False)`` on the
        views it runs; ``plugins.fsdp.LoRAFSDPStrategy`` keeps the heads' gradients as they were.)"""
        params = self.discriminator_parameters()
        was_training = self.discriminator.training
        flags = [p.requires_grad for p in params]
        self.discriminator.eval()
        for p in params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)
            self.discriminator.train(was_training)

    def generator_loss(self, sr: Tensor, gt: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """L_G = reconstruction terms + gan_weight * adversarial generator term (TUDSR eq. 8, StrSR eq. 11).

        Relativistic losses also need real logits: they are computed under ``no_grad`` in their own pass (the
        released StrSR ``optimize_generator_image`` does the same), so only the fake pass keeps backbone activations
        for the backward; real and fake share one augmentation, as in the discriminator step."""
        loss, terms = self.reconstruction(sr, gt, step=self.global_step)
        with self.frozen_discriminator():
            if self.adversarial.needs_real_for_generator:  # relativistic losses (RaGAN)
                real, fake = self.discriminator.augment(gt, sr)
                with torch.no_grad():
                    real_logits = self.discriminator(real, augment=False)
                fake_logits = self.discriminator(fake, augment=False)
            else:
                real_logits, fake_logits = None, self.discriminator(sr)
        adv = self.adversarial.generator_loss(fake_logits, real_logits)
        terms = {**terms, "g_adv": adv.detach()}
        return loss + self.gan_weight * adv, terms

    def discriminator_loss(self, sr: Tensor, gt: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """L_D = disc_weight * adversarial discriminator term (+ approximated R1); D sees the detached output.

        Three backbone passes per update with R1, as released: real, fake, and noisy real; the approximated R1
        reuses the real logits of the adversarial term (StrSR eq. 8, 9) instead of a second pass on the real
        images. Real and fake share one augmentation; the R1 noise is added to the augmented real image, so R1
        compares like with like."""
        real, fake = self.discriminator.augment(gt, sr.detach())
        real_logits = self.discriminator(real, augment=False)
        fake_logits = self.discriminator(fake, augment=False)
        d_adv = self.adversarial.discriminator_loss(real_logits, fake_logits)
        loss = self.disc_weight * d_adv
        terms = {"d_adv": d_adv.detach(),
                 "d_real_logit": torch.stack([r.float().mean() for r in real_logits]).mean().detach(),
                 "d_fake_logit": torch.stack([f.float().mean() for f in fake_logits]).mean().detach()}
        if self.r1 is not None:
            r1 = self.r1(lambda x: self.discriminator(x, augment=False), real, real_logits=real_logits)
            loss = loss + r1
            terms["d_r1"] = r1.detach()
        return loss, terms

    # ---------------------------------------------------------------- optimisation
    def step_uncounted(self, optimizer: LightningOptimizer | torch.optim.Optimizer) -> None:
        """Apply ``optimizer`` without advancing ``trainer.global_step``: the discriminator's update.

        ``LightningOptimizer.step`` is the strategy's ``optimizer_step`` (precision plugin, DDP / FSDP, the
        ``on_before_optimizer_step`` hooks) wrapped in the manual-optimisation loop's progress increment, which is
        what ``global_step`` reads. Calling the strategy directly keeps everything but that increment, so the
        update is the same under every strategy and only generator updates count as steps."""
        raw = optimizer.optimizer if isinstance(optimizer, LightningOptimizer) else optimizer
        self.trainer.strategy.optimizer_step(raw, closure=do_nothing_closure)

    def _optimize(self, which: str, loss: Tensor, terms: dict[str, Tensor], step_now: bool) -> bool:
        """Backward ``loss / accumulate``; on ``step_now`` clip, step and zero the grads. Returns True if stepped.

        A non-finite loss is never backpropagated; non-finite gradients are never applied (the guard counts, logs
        and eventually stops the run naming the offending term)."""
        opt_g, opt_d = self.optimizers()
        opt, params = (opt_g, self.generator_parameters()) if which == "g" else (opt_d, self.discriminator_parameters())
        if self.guard.check_loss(which, loss, terms):
            # gradient sync (DDP) only on the backward that precedes a step
            sync = step_now or not hasattr(self.trainer.strategy, "block_backward_sync")
            with nullcontext() if sync else self.trainer.strategy.block_backward_sync():
                self.manual_backward(loss / self.accumulate)
        if not step_now:
            return False
        stepped = False
        if self.guard.check_grads(which, params):
            if self.grad_clip:
                self.clip_gradients(opt, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
            if which == "g":
                opt.step()  # advances trainer.global_step: the step axis counts generator updates
            else:
                self.step_uncounted(opt)
                self.discriminator_updates += 1
            stepped = True
        opt.zero_grad(set_to_none=True)
        self.guard.end_step(which, stepped)
        return stepped

    def generator_update(self, sr: Tensor, gt: Tensor, step_now: bool) -> dict[str, Tensor]:
        loss, terms = self.generator_loss(sr, gt)
        self._optimize("g", loss, terms, step_now)
        return {"g_total": loss.detach(), **terms, "g_skipped_steps": self._skips("g", loss)}

    def discriminator_update(self, sr: Tensor, gt: Tensor, step_now: bool) -> dict[str, Tensor]:
        loss, terms = self.discriminator_loss(sr, gt)
        self._optimize("d", loss, terms, step_now)
        return {"d_total": loss.detach(), **terms, "d_skipped_steps": self._skips("d", loss)}

    def _skips(self, which: str, like: Tensor) -> Tensor:
        return torch.tensor(float(self.guard.total_skips[which]), device=like.device)

    def log_terms(self, terms: dict[str, Tensor], batch_size: int) -> None:
        """Log the loss terms of this batch with ``step = global_step``: Lightning takes a logged ``step`` as the
        logger's x-axis (instead of its count of batches), so TensorBoard scalars are over generator updates."""
        if not terms:
            return
        self.log_dict({f"train/{k}": v.float() for k, v in terms.items()}, on_step=True, prog_bar=False,
                      batch_size=batch_size)
        self.log("step", float(self.global_step), on_step=True, batch_size=batch_size)

    def on_validation_epoch_end(self) -> None:
        """Evaluation scalars (logged by the evaluation callback at the end of the epoch) on the same axis."""
        self.log("step", float(self.global_step), sync_dist=True)  # the same on every rank

    def batch_counter(self, batch_idx: int) -> int:
        """Training batches seen so far, continuous across epochs and resumes (``batch_idx`` restarts each epoch,
        which would break accumulation windows and G/D alternation at epoch boundaries)."""
        try:
            return int(self.trainer.fit_loop.epoch_loop.total_batch_idx)
        except (AttributeError, RuntimeError):  # no trainer attached (direct calls in tests)
            return batch_idx

    # ---------------------------------------------------------------- data helpers
    @staticmethod
    def lq_at_target(batch: dict[str, Tensor]) -> Tensor:
        """The LQ bicubic-upsampled to the GT size (``lq_up`` when the degradation already did it)."""
        if "lq_up" in batch:
            return batch["lq_up"]
        return bicubic_upsample(batch["lq"], batch["gt"].shape[-2:])

    # ---------------------------------------------------------------- evaluation
    def infer(self, lq: Tensor, scale: int) -> Tensor:
        """LQ (B, 3, h, w) -> SR (B, 3, h*scale, w*scale) in [0, 1]. Subclasses override (tiling, two stages)."""
        return self.generator(bicubic_upsample(lq, scale), lq)

    def sr_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        sr = self.infer(batch["lq"], batch_scale(batch, self.native_scale))
        return {"sr": sr.float().clamp(0, 1), "gt": batch.get("gt"), "lq": batch["lq"], "name": batch["name"]}
