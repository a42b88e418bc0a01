"""FLUX.2 / Z-Image backends of the one-step DiT against diffusers' own pipeline helpers and scheduler.

References are independent of our code: the static latent helpers of ``Flux2KleinPipeline`` and the
pipelines' transformer calls (timestep / sign conventions) followed by ``FlowMatchEulerDiscreteScheduler.step``
with sigmas [0.8, 0.0].
"""

from __future__ import annotations

import pytest
import torch

from models.conditions import TextEmbeddingCondition
from models.generators.dit_onestep import OneStepDiTGenerator
from models.generators.flux2_backend import (
    Flux2Backend,
    latent_position_ids,
    pack_latents,
    patchify_latents,
    text_position_ids,
    unpack_latents,
    unpatchify_latents,
)
from models.generators.zimage_backend import ZImageBackend
from models.pretrained import Source
from tiny_models import TINY_VAE, TINY_ZIMAGE_VAE, TINY_FLUX2, TINY_ZIMAGE



@pytest.fixture(scope="module")
def flux2() -> Flux2Backend:
    torch.manual_seed(0)
    backend = Flux2Backend(Source(config=TINY_FLUX2), Source(config=dict(TINY_VAE, latent_channels=32)), dtype="fp32")
    with torch.no_grad():  # non-trivial BatchNorm statistics (a fresh VAE has mean 0, var 1)
        backend.vae.bn.running_mean.copy_(torch.randn(128) * 0.3)
        backend.vae.bn.running_var.copy_(torch.rand(128) + 0.5)
    return backend


@pytest.fixture(scope="module")
def zimage() -> ZImageBackend:
    torch.manual_seed(0)
    return ZImageBackend(Source(config=TINY_ZIMAGE), Source(config=TINY_ZIMAGE_VAE), dtype="fp32")


def _scheduler_step(model_output: torch.Tensor, sample: torch.Tensor) -> tuple[torch.Tensor, float]:
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
    sched.set_timesteps(sigmas=[0.8])
    assert sched.sigmas.tolist() == pytest.approx([0.8, 0.0])
    t = sched.timesteps[0]
    return sched.step(model_output, t, sample, return_dict=False)[0], float(t)


def test_flux2_latent_layout_matches_pipeline_helpers_and_round_trips() -> None:
    from diffusers import Flux2KleinPipeline as P

    torch.manual_seed(1)
    lat = torch.randn(2, 32, 8, 12)
    patched = patchify_latents(lat)
    assert torch.equal(patched, P._patchify_latents(lat))
    assert torch.equal(unpatchify_latents(patched), lat)
    tokens = pack_latents(patched)  # (2, 24, 128)
    assert torch.equal(tokens, P._pack_latents(patched))
    ids = latent_position_ids(2, 4, 6)
    assert torch.equal(ids, P._prepare_latent_ids(patched))
    assert torch.equal(unpack_latents(tokens, 4, 6), patched)
    assert torch.equal(P._unpack_latents_with_ids(tokens, ids, 4, 6), patched)
    cond = torch.randn(2, 7, 32)
    assert torch.equal(text_position_ids(2, 7), P._prepare_text_ids(cond))
    assert ids[0, 7].tolist() == [0, 1, 1, 0] and text_position_ids(1, 7)[0, 5].tolist() == [0, 0, 0, 5]


def test_flux2_normalisation_uses_bn_statistics_and_round_trips(flux2: Flux2Backend) -> None:
    torch.manual_seed(2)
    x = torch.rand(1, 3, 16, 24)
    z = flux2.encode(x)  # (1, 128, 4, 6)
    raw = flux2.vae.encode(x * 2 - 1).latent_dist.mode()
    mean = flux2.vae.bn.running_mean.view(1, -1, 1, 1)
    std = torch.sqrt(flux2.vae.bn.running_var.view(1, -1, 1, 1) + 1e-4)  # eps from the VAE config
    assert flux2.vae.config.batch_norm_eps == 1e-4
    torch.testing.assert_close(z, (patchify_latents(raw) - mean) / std)
    torch.testing.assert_close(flux2.normalize(flux2.denormalize(z)), z, rtol=0, atol=1e-5)
    dec = flux2.vae.decode(unpatchify_latents(patchify_latents(raw))).sample
    torch.testing.assert_close(flux2.decode(z), (dec + 1) / 2, rtol=1e-4, atol=1e-5)  # unclamped
    assert (dec.abs() > 1).any()  # the random decoder overshoots: the comparison covers the clamp


def test_flux2_one_step_equals_flow_match_euler_step(flux2: Flux2Backend) -> None:
    gen = OneStepDiTGenerator(flux2, TextEmbeddingCondition(dim=32, length=5), sigma=0.8).eval()
    torch.manual_seed(3)
    z = flux2.encode(torch.rand(2, 3, 16, 16))  # (2, 128, 4, 4)
    cond = torch.randn(2, 5, 32)
    with torch.no_grad():
        ours = gen.denoise(z, cond)
        # Reference: the FLUX.2 pipeline's transformer call (timestep t / 1000) and one scheduler step.
        from diffusers import Flux2KleinPipeline as P

        packed = P._pack_latents(z)
        from diffusers import FlowMatchEulerDiscreteScheduler

        sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
        sched.set_timesteps(sigmas=[0.8])
        t = sched.timesteps[0]
        noise_pred = flux2.transformer(hidden_states=packed, encoder_hidden_states=cond,
                                       timestep=t.expand(2) / 1000, img_ids=P._prepare_latent_ids(z),
                                       txt_ids=P._prepare_text_ids(cond), guidance=None, return_dict=False)[0]
        ref_packed, t_value = _scheduler_step(noise_pred, packed)
    assert t_value == pytest.approx(800.0)
    torch.testing.assert_close(ours, P._unpack_latents_with_ids(ref_packed, P._prepare_latent_ids(z), 4, 4),
                               rtol=1e-5, atol=1e-5)
    v = flux2.velocity(z, cond, 0.8)
    torch.testing.assert_close(ours, z - 0.8 * v)
    assert not torch.allclose(ours, z, atol=1e-3)  # the step really moves the latent


def test_zimage_reversed_time_and_sign_give_the_flux_update(zimage: ZImageBackend) -> None:
    gen = OneStepDiTGenerator(zimage, TextEmbeddingCondition(dim=32, length=5), sigma=0.8).eval()
    torch.manual_seed(4)
    z = zimage.encode(torch.rand(2, 3, 16, 16))  # (2, 16, 8, 8)
    cond = torch.randn(2, 5, 32)
    seen: list[torch.Tensor] = []
    hook = zimage.transformer.t_embedder.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    try:
        with torch.no_grad():
            v = zimage.velocity(z, cond, 0.8)  # common convention
            ours = gen.denoise(z, cond)
            # Reference: the Z-Image pipeline: model time (1000 - t) / 1000, negated output, scheduler step.
            from diffusers import FlowMatchEulerDiscreteScheduler

            sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
            sched.set_timesteps(sigmas=[0.8])
            t = sched.timesteps[0]
            out = zimage.transformer(list(z.unsqueeze(2).unbind(0)), (1000 - t.expand(2)) / 1000,
                                     list(cond.unbind(0)), return_dict=False)[0]
            noise_pred = -torch.stack(out).squeeze(2)
            ref, _ = _scheduler_step(noise_pred, z)
    finally:
        hook.remove()
    assert seen[0].tolist() == pytest.approx([200.0, 200.0])  # t_model 0.2 x t_scale 1000
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours, z - 0.8 * v)  # the FLUX-convention update with the equivalent velocity
    torch.testing.assert_close(v, noise_pred)


def test_zimage_vae_scaling_and_pad_tokens(zimage: ZImageBackend) -> None:
    assert (zimage.scaling_factor, zimage.shift_factor) == (0.3611, 0.1159)
    assert zimage.transformer.x_pad_token.abs().sum() > 0 and zimage.transformer.cap_pad_token.abs().sum() > 0
    assert zimage.latent_convention == "released"  # the default
    torch.manual_seed(5)
    x = torch.rand(1, 3, 16, 16)
    raw = zimage.vae.encode(x * 2 - 1).latent_dist.mode()
    torch.testing.assert_close(zimage.encode(x), raw)  # released: the raw latent enters the DiT
    normalized = ZImageBackend(Source(config=TINY_ZIMAGE), Source(config=TINY_ZIMAGE_VAE), dtype="fp32",
                               latent_convention="normalized")
    normalized.vae.load_state_dict(zimage.vae.state_dict())
    z = normalized.encode(x)
    torch.testing.assert_close(z, (raw - 0.1159) * 0.3611)  # the diffusers pipeline's model space
    dec = zimage.vae.decode(raw).sample
    for backend in (zimage, normalized):  # both decode z / scaling + shift, unclamped
        torch.testing.assert_close(backend.decode(z), (dec + 1) / 2, rtol=1e-4, atol=1e-5)
    assert zimage.text_dim == 32 and zimage.pixel_multiple == 4  # tiny VAE: /2, then 2x2 patches
    with pytest.raises(ValueError, match="latent_convention"):
        ZImageBackend(Source(config=TINY_ZIMAGE), Source(config=TINY_ZIMAGE_VAE), latent_convention="scaled")


@pytest.mark.parametrize("train", [False, True])
def test_zimage_forward_equals_the_released_forward(zimage: ZImageBackend, train: bool) -> None:
    """Our one-step Z-Image generator against a re-implementation of the released forward (jkwang28/StrSR at commit
    46e57115de967b19bb27c5c783bc5bcb819c86a4: ``HYPIR/trainer/zimage_vlm.py`` ``prepare_batch_inputs`` /
    ``forward_generator`` / ``_decode_latents``, and ``test_zimage.py``): the raw VAE latent
    ``latent_dist.sample()`` enters the transformer at model time (1000 - 800) / 1000, the output is negated, one
    Euler step z - 0.8 v, decoded with z / scaling + shift; same tiny weights, in eval (latent mode) and in training
    (latent sample, same random draw)."""
    cond = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(6))
    condition = TextEmbeddingCondition(dim=32, length=5)
    gen = OneStepDiTGenerator(zimage, condition, sigma=0.8).train(train)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))  # bicubic-upsampled LR in [0, 1]
    with torch.no_grad():
        torch.manual_seed(8)
        ours = gen.restore(x, cond)
        torch.manual_seed(8)
        dist = zimage.vae.encode(x * 2 - 1).latent_dist
        z_lq = dist.sample() if train else dist.mode()
        t = (1000 - torch.full((2,), 800, dtype=torch.long)) / 1000
        out = zimage.transformer(list(z_lq.unsqueeze(2).unbind(0)), t, list(cond.unbind(0)), return_dict=False)[0]
        noise_pred = -torch.stack([o.float() for o in out], dim=0).squeeze(2)
        latents = z_lq.float() - (0.8 - 0.0) * noise_pred
        image = zimage.vae.decode(latents / zimage.vae.config.scaling_factor + zimage.vae.config.shift_factor,
                                  return_dict=False)[0]
    expected = (image + 1) / 2
    if train:  # the training output is not clamped (the released trainer's x); the random VAE overshoots
        assert ((expected < 0) | (expected > 1)).any()
    else:  # the evaluation output is
        expected = expected.clamp(0, 1)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
