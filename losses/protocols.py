"""The contract of the adversarial objectives, as the LightningModules use them (plain torch).

Implementations never import this file (structural typing); LightningCLI (jsonargparse) checks at parse time that a
configured ``class_path`` has these methods with these exact signatures.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["AdversarialLoss"]


@runtime_checkable
class AdversarialLoss(Protocol):
    """A multi-level GAN objective: one logit tensor per discriminator level (maps (B, 1, h, w) or vectors (B, 1)).

    Implemented by :class:`~losses.adversarial.SoftLabelBCE` (TUDSR eq. 6, 7) and :class:`~losses.adversarial.RaGAN`
    (StrSR eq. 7). The loss owns no trainable parameter and detaches nothing: the caller passes the logits of the
    detached generator output to :meth:`discriminator_loss`.
    """

    #: True when :meth:`generator_loss` compares the fakes with real logits (relativistic losses): the generator
    #: step then runs the discriminator on the (real, fake) pair instead of the fakes alone.
    needs_real_for_generator: bool

    def generator_loss(self, fake_logits: list[Tensor], real_logits: list[Tensor] | None = None) -> Tensor:
        """Scalar generator term; ``real_logits`` is given exactly when ``needs_real_for_generator``."""
        ...

    def discriminator_loss(self, real_logits: list[Tensor], fake_logits: list[Tensor]) -> Tensor:
        """Scalar discriminator term (unweighted)."""
        ...
