"""Spectral norm is calibrated at construction: before any training step, in eval mode (the generator step), every
normalised head weight has a top singular value of 1 (Miyato et al., ICLR 2018), for the TUDSR DINOv3 heads and the
StrSR ConvNeXt map and vector heads, at the real widths and at demo size.

Without calibration ``torch.nn.utils.spectral_norm`` divides by ``u^T W v`` of its random ``u``, ``v`` until the
first train-mode forward: a fresh head (each stage starts with fresh heads) in eval mode then scales its logits by
sigma_max / (u^T W v): 30-700x at the real sizes (by seed and layer).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import spectral_norm

from models.discriminators import CLIPConvNeXtDiscriminator, DINOv3Discriminator
from models.discriminators.heads import INIT_POWER_ITERATIONS, ConvHead, VectorHead
from models.pretrained import Source

DINO_TINY = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                 num_register_tokens=4, patch_size=8, image_size=64)  # configs/demo/parts/tudsr.yaml
CONVNEXT_TINY = dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), num_classes=24, ls_init_value=1.0)  # demo strsr


def sn_layers(module: nn.Module) -> list[nn.Module]:
    layers = [m for m in module.modules() if hasattr(m, "weight_orig")]
    assert layers, "no spectral-norm layer found"
    return layers


def normalised_sigmas(module: nn.Module) -> list[float]:
    """Top singular value of each layer's normalised weight as the eval forward uses it (reshaped (out, -1) as
    torch does); ``layer.weight`` is recomputed by the spectral-norm pre-hook of the forward just run."""
    return [float(torch.linalg.matrix_norm(m.weight.detach().reshape(m.weight.shape[0], -1), ord=2))
            for m in sn_layers(module)]


@pytest.mark.parametrize(
    ("cls", "in_size", "width", "x_shape"),
    [
        (ConvHead, 768, 128, (1, 768, 8, 8)),     # TUDSR: DINOv3-ViT-B layers 3/6/9, width 128
        (ConvHead, 384, 512, (1, 384, 8, 8)),     # StrSR: CLIP-ConvNeXt-XXL stage 0, width 512
        (ConvHead, 1536, 512, (1, 1536, 4, 4)),   # ... stage 2
        (VectorHead, 1024, 512, (2, 1024)),       # ... pooled CLIP embedding
    ],
    ids=["dinov3", "convnext-stage0", "convnext-stage2", "convnext-vector"],
)
def test_fresh_head_sigma_is_one_in_eval(cls: type[nn.Module], in_size: int, width: int,
                                         x_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    head = cls(in_size, width).eval()
    state = {k: v.clone() for k, v in head.state_dict().items()}
    with torch.no_grad():
        head(torch.rand(x_shape))
    for sigma in normalised_sigmas(head):
        assert abs(sigma - 1.0) < 0.05, sigma
    # eval runs no power iteration: the calibrated vectors are the ones stored (and checkpointed)
    assert all(torch.equal(v, state[k]) for k, v in head.state_dict().items())


def test_uncalibrated_spectral_norm_is_far_from_one() -> None:
    """What the calibration fixes: torch's spectral_norm at the same init, eval before any train forward."""
    torch.manual_seed(0)
    plain = spectral_norm(nn.Conv2d(768, 128, 3, stride=2)).eval()
    with torch.no_grad():
        plain(torch.rand(1, 768, 8, 8))
    assert normalised_sigmas(plain)[0] > 10.0  # 137 with this seed
    assert INIT_POWER_ITERATIONS == 15  # torch.nn.utils.parametrizations.spectral_norm's count at registration


@pytest.mark.parametrize("kind", ["dinov3", "convnext"])
def test_discriminators_at_demo_size_are_calibrated(kind: str) -> None:
    torch.manual_seed(1)
    if kind == "dinov3":
        disc = DINOv3Discriminator(Source(config=dict(DINO_TINY)), layers=(1, 2, 3), head_width=16)
        x = torch.rand(1, 3, 64, 64)
    else:
        disc = CLIPConvNeXtDiscriminator(Source(config=dict(CONVNEXT_TINY)), head_width=16)
        x = torch.rand(1, 3, 96, 96)
    disc.eval()
    with torch.no_grad():
        disc(x)
    sigmas = normalised_sigmas(disc.heads)
    assert len(sigmas) == 2 * disc.num_levels
    assert all(abs(s - 1.0) < 0.05 for s in sigmas), sigmas


def test_calibrated_vectors_travel_with_the_heads_state() -> None:
    torch.manual_seed(2)
    disc = DINOv3Discriminator(Source(config=dict(DINO_TINY)), layers=(1, 2, 3), head_width=16).eval()
    state = disc.trainable_state_dict()
    assert {k.rsplit(".", 1)[-1] for k in state} == {"weight_orig", "weight_u", "weight_v", "bias"}
    torch.manual_seed(3)
    other = DINOv3Discriminator(Source(config=dict(DINO_TINY)), layers=(1, 2, 3), head_width=16).eval()
    assert not torch.equal(other.heads[0][1].weight_u, disc.heads[0][1].weight_u)
    other.backbone.load_state_dict(disc.backbone.state_dict())
    other.load_trainable_state_dict(state)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(disc(x), other(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
