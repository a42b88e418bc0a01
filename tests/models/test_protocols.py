"""The contracts of models/protocols.py and losses/protocols.py: what implements them (as LightningCLI checks it
at parse time, method names and exact signatures) and what does not."""

from __future__ import annotations

import inspect

import pytest
from jsonargparse._typehints import implements_protocol

from lightning_modules.base import OneStepGANModule
from losses.adversarial import RaGAN, SoftLabelBCE
from losses.pixel import L1
from losses.protocols import AdversarialLoss
from models.discriminators.multilevel import (
    CLIPConvNeXtDiscriminator, DINOv3Discriminator, MultiLevelDiscriminator,
)
from models.generators.dit_onestep import OneStepDiTGenerator
from models.generators.sd_onestep import OneStepSDGenerator
from models.protocols import Discriminator, OneStepGenerator


@pytest.mark.parametrize("cls", [OneStepSDGenerator, OneStepDiTGenerator])
def test_both_generators_implement_the_generator_protocol(cls: type) -> None:
    assert implements_protocol(cls, OneStepGenerator)
    assert isinstance(cls.active_adapter, property)  # the adapter forward uses, on both backbones


@pytest.mark.parametrize("cls", [MultiLevelDiscriminator, DINOv3Discriminator, CLIPConvNeXtDiscriminator])
def test_discriminators_implement_the_discriminator_protocol(cls: type) -> None:
    assert implements_protocol(cls, Discriminator)


def test_adversarial_losses_implement_the_loss_protocol() -> None:
    assert implements_protocol(SoftLabelBCE, AdversarialLoss) and implements_protocol(RaGAN, AdversarialLoss)
    assert isinstance(RaGAN(), AdversarialLoss) and isinstance(SoftLabelBCE(), AdversarialLoss)
    # the generator step runs D on (real, fake) exactly for the relativistic loss
    assert RaGAN.needs_real_for_generator is True and SoftLabelBCE.needs_real_for_generator is False


def test_what_does_not_fit_is_rejected() -> None:
    assert not implements_protocol(L1, AdversarialLoss)  # a reconstruction term is no adversarial loss
    assert not implements_protocol(RaGAN, OneStepGenerator)
    assert not implements_protocol(OneStepSDGenerator, Discriminator)

    class NoAdapters:  # a generator without named adapters
        def forward(self, lq_up, lq=None):  # noqa: ANN001, ANN201
            return lq_up

    assert not implements_protocol(NoAdapters, OneStepGenerator)


def test_the_lightning_modules_are_typed_against_the_protocols() -> None:
    params = inspect.signature(OneStepGANModule.__init__, eval_str=True).parameters
    assert params["generator"].annotation is OneStepGenerator
    assert params["discriminator"].annotation is Discriminator
    assert params["adversarial"].annotation is AdversarialLoss
