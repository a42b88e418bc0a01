"""Discriminator passes of the StrSR losses, as released (jkwang28/StrSR, HYPIR/trainer/base.py at commit
46e57115de967b19bb27c5c783bc5bcb819c86a4, ``optimize_generator_image`` and ``optimize_discriminator``):

- generator step: fake logits with gradient, real logits under ``no_grad`` (two backbone passes, one of them
  keeping activations);
- discriminator step: real, fake and noisy-real passes (three), the approximated R1 reusing the real logits of the
  adversarial term.

Tiny CLIP-ConvNeXt discriminator of the StrSR demo, random weights, CPU.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from lightning_modules.base import OneStepGANModule
from losses.adversarial import RaGAN
from losses.pixel import L1
from losses.r1 import ApproxR1
from losses.weighted import WeightedLoss
from models.discriminators.multilevel import CLIPConvNeXtDiscriminator
from models.pretrained import Source

_PART = Path(__file__).resolve().parents[2] / "configs" / "demo" / "parts" / "strsr.yaml"
CONVNEXT = yaml.safe_load(_PART.read_text())["model"]["init_args"]["discriminator"]["init_args"]["backbone"]["config"]


def build(diffaug: str = "", r1: bool = True) -> OneStepGANModule:
    torch.manual_seed(0)
    disc = CLIPConvNeXtDiscriminator(Source(config=CONVNEXT), stages=[0, 1, 2], pooled=True, head_width=16,
                                     diffaug=diffaug)
    reconstruction = WeightedLoss({"l1": L1()}, {"l1": 0.0})  # no reconstruction: the adversarial term alone
    return OneStepGANModule(nn.Identity(), disc, reconstruction, RaGAN(), gan_weight=0.1, disc_weight=1.0,
                            r1=ApproxR1(10.0, "uniform", 0.005) if r1 else None)


class PassCounter:
    """Forward hook on the frozen backbone: (images in the pass, grad enabled) per call."""

    def __init__(self, backbone: nn.Module) -> None:
        self.calls: list[tuple[int, bool]] = []
        self.handle = backbone.register_forward_hook(self.hook)

    def hook(self, module: nn.Module, args: Any, output: Any) -> None:
        self.calls.append((int(args[0].shape[0]), torch.is_grad_enabled()))


def images(b: int = 2, size: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g), torch.rand(b, 3, size, size, generator=g)


@pytest.mark.parametrize("diffaug", ["", "color,translation,cutout"])
def test_generator_adversarial_gradient_unchanged(diffaug: str) -> None:
    """The real pass under no_grad gives the generator the gradient of the former joint (real, fake) pass with
    gradients on both: RaGAN detaches the real logits for G."""
    module = build(diffaug)
    gt, sr0 = images()
    sr_new = sr0.clone().requires_grad_(True)
    torch.manual_seed(5)  # the augmentation draws
    loss, terms = module.generator_loss(sr_new, gt)
    loss.backward()

    sr_old = sr0.clone().requires_grad_(True)
    torch.manual_seed(5)
    with module.frozen_discriminator():  # the former formulation: one batched pass, both with gradient
        real_logits, fake_logits = module.discriminator.forward_pair(gt, sr_old)
    old = module.gan_weight * RaGAN().generator_loss(fake_logits, real_logits)
    old.backward()
    assert loss.item() == pytest.approx(old.item(), rel=1e-5) and terms["g_adv"].item() > 0
    assert sr_new.grad.abs().max() > 0
    torch.testing.assert_close(sr_new.grad, sr_old.grad, rtol=1e-4, atol=1e-9)
    assert all(p.grad is None for p in module.discriminator_parameters())  # nothing reaches the heads


def test_backbone_passes_per_update_match_the_released_count() -> None:
    module = build()
    gt, sr = images()
    counter = PassCounter(module.discriminator.backbone)
    module.generator_loss(sr.clone().requires_grad_(True), gt)
    # released G step: D(x) with gradient, D(gt) under no_grad; only the fake pass keeps backbone activations
    assert sorted(counter.calls) == [(2, False), (2, True)]
    counter.calls.clear()
    module.discriminator_loss(sr, gt)
    # released D step: D(gt), D(x), D(gt + noise); the R1 reuses D(gt) (formerly a fourth pass: 2 + 2 + 2 + 2 images)
    assert counter.calls == [(2, True)] * 3


def test_discriminator_loss_equals_the_released_formula() -> None:
    """Our D loss (RaGAN + approximated R1 reusing the real logits) against a re-implementation of the released
    ``optimize_discriminator``: three passes in the released order on a copy of the same discriminator (its
    spectral-norm vectors advance once per train-mode pass), R1 noise U[0, 0.005) on [-1, 1] pixels."""
    module = build()
    module.discriminator.train()
    reference = copy.deepcopy(module.discriminator)
    gt, sr = images()
    torch.manual_seed(7)
    loss, terms = module.discriminator_loss(sr, gt)

    def ragan_d(r: torch.Tensor, f: torch.Tensor) -> torch.Tensor:  # relativistic_discriminator_loss, released
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        r_real, r_fake = r - f.mean(dim=0, keepdim=True), f - r.mean(dim=0, keepdim=True)
        return (bce(r_real, torch.ones_like(r_real)) + bce(r_fake, torch.zeros_like(r_fake))) / 2

    torch.manual_seed(7)
    gt_pm, sr_pm = gt * 2 - 1, sr * 2 - 1  # the released images live on [-1, 1]
    real = reference(gt_pm * 0.5 + 0.5, augment=False)
    fake = reference(sr_pm * 0.5 + 0.5, augment=False)
    loss_d = sum(ragan_d(r, f) for r, f in zip(real, fake))
    noisy = reference((gt_pm + torch.rand_like(gt_pm) * 0.005) * 0.5 + 0.5, augment=False)
    per_sample = sum(((r - n) ** 2).mean(dim=list(range(1, r.dim()))).view(-1, 1) for r, n in zip(real, noisy))
    expected = loss_d + 10.0 * per_sample.mean()
    assert terms["d_r1"].item() > 0
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
