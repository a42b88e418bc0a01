"""Multi-level adversarial objectives: TUDSR's soft-label BCE (eq. 6, 7) and StrSR's RaGAN (eq. 7).

Both take one logit tensor per discriminator level (patch maps (B, 1, h, w) or vectors (B, 1)) and implement
:class:`losses.protocols.AdversarialLoss`. The discriminator loss never detaches anything: the caller passes logits
of the detached generator output.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losses.protocols import AdversarialLoss

__all__ = ["AdversarialLoss", "SoftLabelBCE", "RaGAN"]


def _check(name: str, a: list[Tensor], b: list[Tensor] | None = None) -> None:
    if len(a) == 0:
        raise ValueError(f"{name}: got no logit levels")
    if b is not None and len(a) != len(b):
        raise ValueError(f"{name}: {len(a)} fake levels vs {len(b)} real levels")


def _bce(logits: Tensor, label: float) -> Tensor:
    """BCE-with-logits against a constant label, mean over all elements, fp32."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))


class SoftLabelBCE(nn.Module):
    """TUDSR's multi-level GAN loss with one-sided label smoothing (paper eq. 6, 7)::

        L_G = 1/K sum_k BCE(D_k(G(x)), gen_label)
        L_D = 1/K sum_k BCE(D_k(y), real_label) + 1/K sum_k BCE(D_k(G(x)), fake_label)

    BCE-with-logits averaged over batch and space within a level; levels averaged (the paper's 1/3 over layers
    3, 6, 9; ``reduce_levels="sum"`` is an option). lambda2 of L_D is applied by the caller.

    Args:
        real_label: target of real images for D (0.8).
        gen_label: target of fake images for G (0.8).
        fake_label: target of fake images for D (0.0).
        reduce_levels: ``"mean"`` (paper) or ``"sum"``.
    """

    needs_real_for_generator = False  # the generator term sees the fakes alone

    def __init__(
        self,
        real_label: float = 0.8,
        gen_label: float = 0.8,
        fake_label: float = 0.0,
        reduce_levels: Literal["mean", "sum"] = "mean",
    ) -> None:
        super().__init__()
        if reduce_levels not in ("mean", "sum"):
            raise ValueError(f"reduce_levels must be 'mean' or 'sum', got {reduce_levels!r}")
        self.real_label, self.gen_label, self.fake_label = real_label, gen_label, fake_label
        self.reduce_levels = reduce_levels

    def _reduce(self, losses: list[Tensor]) -> Tensor:
        total = torch.stack(losses).sum()
        return total / len(losses) if self.reduce_levels == "mean" else total

    def real_loss(self, real_logits: list[Tensor]) -> Tensor:
        _check("SoftLabelBCE", real_logits)
        return self._reduce([_bce(r, self.real_label) for r in real_logits])

    def fake_loss(self, fake_logits: list[Tensor]) -> Tensor:
        _check("SoftLabelBCE", fake_logits)
        return self._reduce([_bce(f, self.fake_label) for f in fake_logits])

    def generator_loss(self, fake_logits: list[Tensor], real_logits: list[Tensor] | None = None) -> Tensor:
        """Scalar; ``real_logits`` is unused (accepted for the shared interface)."""
        _check("SoftLabelBCE", fake_logits)
        return self._reduce([_bce(f, self.gen_label) for f in fake_logits])

    def discriminator_loss(self, real_logits: list[Tensor], fake_logits: list[Tensor]) -> Tensor:
        """Scalar ``L_real + L_fake`` (unweighted)."""
        _check("SoftLabelBCE", fake_logits, real_logits)
        return self.real_loss(real_logits) + self.fake_loss(fake_logits)


class RaGAN(nn.Module):
    """Relativistic average GAN, per level, levels summed (StrSR eq. 7)::

        D: s * (BCE(r - E_B[f], 1) + BCE(f - E_B[r], 0))
        G: s * (BCE(f - E_B[r], 1) + BCE(r - E_B[f], 0)),   real logits detached for G

    ``form="released"`` (default): s = 1/2, as the released StrSR code computes it (jkwang28/StrSR,
    ``HYPIR/trainer/base.py``, ``relativistic_{generator,discriminator}_loss``, inherited from HYPIR).
    ``form="paper"``: s = 1, eq. 7 as printed (the sum of the two expectations), i.e. twice the released terms: the
    same as doubling ``gan_weight`` and the discriminator's loss scale.

    ``E_B`` is the mean over the **batch dimension only** (``mean(dim=0, keepdim=True)``), so patch maps keep
    their spatial layout: position (i, j) of a real map is compared with the batch mean at (i, j) of the fake
    maps, as the released code does. BCE averages over batch and space.

    Args:
        form: ``"released"`` (the 1/2 of the released code) or ``"paper"`` (eq. 7 without it).
    """

    needs_real_for_generator = True  # the generator term compares fakes with (detached) reals

    def __init__(self, form: Literal["released", "paper"] = "released") -> None:
        super().__init__()
        if form not in ("released", "paper"):
            raise ValueError(f"form must be 'released' or 'paper', got {form!r}")
        self.form = form
        self.scale = 0.5 if form == "released" else 1.0

    def _level(self, a: Tensor, b: Tensor) -> Tensor:
        """s * (BCE(a - E_B[b], 1) + BCE(b - E_B[a], 0)): ``a`` is pushed up relative to ``b``."""
        a, b = a.float(), b.float()
        return self.scale * (_bce(a - b.mean(dim=0, keepdim=True), 1.0) + _bce(b - a.mean(dim=0, keepdim=True), 0.0))

    def generator_loss(self, fake_logits: list[Tensor], real_logits: list[Tensor] | None = None) -> Tensor:
        if real_logits is None:
            raise ValueError("RaGAN.generator_loss needs real_logits (the relativistic loss compares to reals)")
        _check("RaGAN", fake_logits, real_logits)
        return torch.stack([self._level(f, r.detach()) for f, r in zip(fake_logits, real_logits)]).sum()

    def discriminator_loss(self, real_logits: list[Tensor], fake_logits: list[Tensor]) -> Tensor:
        _check("RaGAN", fake_logits, real_logits)
        return torch.stack([self._level(r, f) for r, f in zip(real_logits, fake_logits)]).sum()
