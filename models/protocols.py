"""The contracts between the networks and the LightningModules that train them (plain torch).

The LightningModules (``lightning_modules/``) are typed against these protocols, not against concrete classes, so any
network that implements one plugs into the same schedule from YAML. Implementations are ``nn.Module`` subclasses
that never import this file (structural typing). LightningCLI (jsonargparse) checks at parse time that a configured
``class_path`` implements the protocol: every method named here must exist with these parameter names and, where
annotated, these exact annotations.

Images are float tensors in [0, 1], shape (B, 3, H, W), everywhere in these signatures.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

__all__ = ["Discriminator", "OneStepGenerator"]


@runtime_checkable
class OneStepGenerator(Protocol):
    """A one-step SR generator: a frozen diffusion backbone with named LoRA adapters (TUDSR eq. 2, StrSR eq. 2-6).

    Implemented by :class:`~models.generators.sd_onestep.OneStepSDGenerator` (TUDSR, SD2.1 UNet) and
    :class:`~models.generators.dit_onestep.OneStepDiTGenerator` (StrSR, FLUX.2 / Z-Image DiT).

    Several adapters may live in the one backbone (TUDSR stage 1 and stage 2): ``adapter_name`` is the adapter being
    *trained* (the only LoRA that :meth:`trainable_named_parameters` yields; ``None``: none), ``active_adapter`` the
    one :meth:`forward` uses, switched with :meth:`set_adapter`. The noise level of a pass defaults to the
    generator's own setting (``timestep`` of the SD generator, ``sigma`` of the DiT) and is given explicitly per
    call by the twice-upsampling passes (TUDSR sec. 3.8, Fig. 2(b): t1 then t2): ``forward(..., timestep=)`` /
    ``denoise(z, timestep=)`` of the SD generator, ``forward(..., sigma=)`` / ``restore(x, cond, sigma=)`` of the
    DiT. :class:`~models.inference.tudsr.TUDSRPipeline` and :class:`~lightning_modules.stage2.Stage2Module` drive
    either through this protocol (plus each backbone's own tiling of a pass).
    """

    adapter_name: str | None

    @property
    def active_adapter(self) -> str | None:
        """The adapter :meth:`forward` runs with (``None``: the bare backbone)."""
        ...

    def forward(self, lq_up: Tensor, lq: Tensor | None = None) -> Tensor:
        """``lq_up`` (B, 3, H, W) in [0, 1], the LQ already bicubic-upsampled to the target size; ``lq`` (B, 3, h, w)
        the raw LR (the DiT's VLM condition reads it; the SD generator ignores it) -> SR (B, 3, H, W) in [0, 1]."""
        ...

    def trainable_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The trained adapter's LoRA (and any condition MLP), named as in ``named_parameters()``."""
        ...

    def set_adapter(self, name: str | None) -> None:
        """Make adapter ``name`` the only active one (``None``: no adapter); the trained adapter stays the only one
        that requires grad."""
        ...

    def load_adapter(self, path: str | os.PathLike, name: str | None = None, trainable: bool = False) -> None:
        """Load an export of :meth:`export_adapter` as adapter ``name`` (``None``: ``adapter_name``), frozen unless
        ``trainable``."""
        ...

    def export_adapter(self, path: str | os.PathLike) -> Any:
        """Write the trained adapter (diffusers/peft LoRA safetensors, plus any condition MLP next to it) under
        ``path``; returns what was written."""
        ...


@runtime_checkable
class Discriminator(Protocol):
    """A multi-level discriminator: a frozen backbone and one trainable head per level (TUDSR sec. 3.5, StrSR
    sec. 3.3). Implemented by :class:`~models.discriminators.multilevel.MultiLevelDiscriminator` (DINOv3 and
    CLIP-ConvNeXt backbones).

    Only ``heads`` train. During the generator step the LightningModule puts the discriminator in eval (no
    spectral-norm power iteration) and stops gradients to the heads' weights, while gradients still flow through
    it to the generator output.
    """

    heads: nn.ModuleList

    def forward(self, x: Tensor, augment: bool = True) -> list[Tensor]:
        """``x`` (B, 3, H, W) in [0, 1] -> logits per level, maps (B, 1, h, w) or vectors (B, 1). ``augment``:
        apply the configured DiffAugment policy (fresh random parameters per call)."""
        ...

    def forward_pair(self, real: Tensor, fake: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Logits of ``real`` and ``fake`` (same shape) under one identical augmentation: (real levels, fake levels)."""
        ...

    def augment(self, *images: Tensor) -> tuple[Tensor, ...]:
        """The configured augmentation with one set of random parameters applied to every image (identity when
        off); pair it with ``forward(..., augment=False)`` to run real and fake in separate passes."""
        ...

    def trainable_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The heads' parameters, named as in ``named_parameters()``."""
        ...
