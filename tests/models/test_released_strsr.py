"""The released StrSR file layout and inference: our StrSRInference against a re-implementation of the released
scripts, on tiny random FLUX.2 / Z-Image models saved in the released layout.

The re-implementation below follows jkwang28/StrSR ``test_flux.py`` (commit 7c86c31a0402137e9b3211b66482e3062eb71295)
and ``test_zimage.py`` (commit 227a3172911fe81862088b942b1ee88b40fecef4): ``FluxValInfer`` / ``ZImageValInfer``
(peft ``get_peft_model`` on the transformer, ``load_trainable_weights`` of ``HYPIR/utils/inference.py`` at commit
46e57115de967b19bb27c5c783bc5bcb819c86a4, the ``nn.Sequential`` projector from ``projector.pth``, bf16 latent
normalisation, timestep ``model_t / 1000`` (FLUX) or ``(1000 - model_t) / 1000`` with the output negated (Z-Image),
``_step`` with ``sigmas = [coeff_t / 1000, 0]``) and ``infer_tiled`` (reflect pad to 16, ``tile_coords``, the
interior-edge ``linspace`` mask, ``latent_dist.sample()``, bf16 autocast, ``clamp_min(1e-6)``, clamp to [-1, 1]).
The released scripts autocast only on CUDA (with bf16 weights); here the same autocast runs on the CPU. The VLM
features (the Qwen3-VL pass before the projector) come from our ``VLMCondition`` for both sides: its equality with
the released feature extraction is tested in ``tests/models/test_conditions.py``.

Tolerances on [0, 1] outputs: fp32 max |difference| 1e-5 (measured 1.2e-7). bf16 autocast: max 3e-2, mean 3e-3
(measured max 1.4e-2 / 9.3e-3 / 1.8e-2 and mean 1.9e-3 / 1.1e-3 / 1.9e-3 on FLUX.2 VLM / Z-Image VLM / FLUX.2 text):
the released code runs the projector in bf16 and normalises the FLUX.2 latent in bf16, we keep the MLP and the latent
in fp32; the released code's own bf16-vs-fp32 difference is of the same size (max 1.8e-2 / 9.2e-3 / 1.7e-2, mean
2e-3), while sampling vs taking the mode of the latent, or no tiling, changes outputs by 0.8.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.strsr_inference import StrSRInference
from models.conditions import TextEmbeddingCondition, VLMCondition
from models.generators.dit_onestep import OneStepDiTGenerator
from models.generators.flux2_backend import FLUX2_LORA_TARGETS, Flux2Backend
from models.generators.released_strsr import (RELEASED_LORA_FILE, RELEASED_PROJECTOR_FILE, load_released,
                                              save_released)
from models.generators.zimage_backend import ZIMAGE_LORA_TARGETS, ZImageBackend
from models.lora import LoraConfig
from models.pretrained import Source
from tiny_models import PROMPT_IDS, TINY_FLUX2, TINY_QWEN3_VL, TINY_VAE, TINY_ZIMAGE, TINY_ZIMAGE_VAE

TILE, OVERLAP = 32, 8   # 1024 / 64 scaled down: a 64 x 48 input gets 3 x 2 tiles with interior edges
TOL = {"fp32": (1e-5, 1e-5), "bf16": (3e-2, 3e-3)}   # (max, mean) |ours - released|


def _backend(kind: str, dtype: str):
    torch.manual_seed(1)  # the same random base for every generator of a kind
    if kind == "flux2":
        return Flux2Backend(Source(config=TINY_FLUX2), Source(config=dict(TINY_VAE, latent_channels=32)), dtype=dtype)
    return ZImageBackend(Source(config=TINY_ZIMAGE), Source(config=TINY_ZIMAGE_VAE), dtype=dtype)


_VLM = None


def _condition(text: bool, dim: int = 32):
    global _VLM
    if text:
        torch.manual_seed(3)
        cond = TextEmbeddingCondition(dim=dim, length=5)
        cond.embedding.normal_()  # a fixed "prompt embedding" at the DiT's text width
        return cond
    if _VLM is None:
        torch.manual_seed(2)
        _VLM = VLMCondition(Source(config=TINY_QWEN3_VL), prompt_ids=PROMPT_IDS, dtype="fp32", min_pixels=16 * 16)
    return _VLM


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> dict[tuple[str, bool], object]:
    """Per (backbone, text prompt): a trained-looking generator saved in the released layout."""
    out = {}
    for kind in ("flux2", "zimage"):
        for text in (False, True):
            gen = OneStepDiTGenerator(_backend(kind, "fp32"), _condition(text), lora=LoraConfig(rank=4, alpha=4))
            torch.manual_seed(4)
            with torch.no_grad():  # lora_B starts at zero: make the adapter (and the MLP) non-trivial
                for _, p in gen.trainable_named_parameters():
                    p.add_(torch.randn_like(p) * 0.1)
            folder = tmp_path_factory.mktemp(f"StrSR-{kind}{'-txt' if text else ''}")
            save_released(gen, folder)
            out[kind, text] = SimpleNamespace(folder=folder, gen=gen)
    return out


# ---------------------------------------------------------------------------------------------- the released code
def _load_trainable_weights(model: nn.Module, state: dict) -> None:
    """HYPIR/utils/inference.py ``load_trainable_weights``: every trainable key, no other, same shapes; strict."""
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert set(state) == set(trainable), (sorted(set(trainable) - set(state))[:3], sorted(set(state) - set(trainable))[:3])
    assert all(state[k].shape == trainable[k].shape for k in state)
    full = model.state_dict()
    full.update(state)
    model.load_state_dict(full, strict=True)


class ReleasedInfer:
    """``FluxValInfer`` / ``ZImageValInfer`` with ``_init_vae``, ``_init_generator``, ``_load_lora_weights``,
    ``_init_qwen_projector``, ``forward_generator``, ``decode_latents`` on given modules."""

    def __init__(self, kind: str, base, folder, weight_dtype: torch.dtype, text: bool) -> None:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        self.kind, self.weight_dtype, self.device = kind, weight_dtype, torch.device("cpu")
        self.vae = copy.deepcopy(base.vae).to(weight_dtype).eval().requires_grad_(False)
        G = copy.deepcopy(base.transformer).to(weight_dtype).eval()
        if kind == "flux2":  # test_flux.py _resolve_lora_targets: Linear/Conv, name ends with / contains a pattern
            kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
            targets = sorted({n for n, m in G.named_modules() if isinstance(m, kinds)
                              and any(n.endswith(p) or p in n for p in FLUX2_LORA_TARGETS)})
        else:  # test_zimage.py: the patterns go to peft as they are
            targets = list(ZIMAGE_LORA_TARGETS)
        self.G = get_peft_model(G, PeftLoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                                  target_modules=targets)).eval()
        _load_trainable_weights(self.G, torch.load(folder / RELEASED_LORA_FILE, map_location="cpu"))
        self.projector = None
        if not text:
            target_dim = TINY_FLUX2["joint_attention_dim"] if kind == "flux2" else TINY_ZIMAGE["cap_feat_dim"]
            qwen_dim = TINY_QWEN3_VL["text_config"]["hidden_size"]
            self.projector = nn.Sequential(nn.Linear(qwen_dim, target_dim // 2), nn.SiLU(),
                                           nn.Linear(target_dim // 2, target_dim)).to(dtype=weight_dtype)
            self.projector.load_state_dict(torch.load(folder / RELEASED_PROJECTOR_FILE, map_location="cpu"))
            self.projector.eval()

    # c_txt: the projected VLM text tokens (or the text encoder's prompt embedding, without projector)
    def prepare(self, feats: torch.Tensor) -> None:
        tokens = feats[0].to(self.weight_dtype)
        emb = self.projector(tokens) if self.projector is not None else tokens
        embeds = emb[None]  # pad_sequence of one
        if self.kind == "flux2":
            ids = torch.zeros(1, embeds.shape[1], 4, dtype=embeds.dtype)
            ids[:, :, 3] = torch.arange(embeds.shape[1], dtype=embeds.dtype)
            self.c_txt = {"text_embeds": embeds, "text_ids": ids}
        else:
            self.c_txt = {"prompt_embeds": [embeds[0]]}

    def _bn(self, latents):
        mean = self.vae.bn.running_mean.view(1, -1, 1, 1).to(latents.device, latents.dtype)
        std = torch.sqrt(self.vae.bn.running_var.view(1, -1, 1, 1) + self.vae.config.batch_norm_eps).to(
            latents.device, latents.dtype)
        return mean, std

    def encode(self, lq: torch.Tensor, sample: bool) -> torch.Tensor:
        dist = self.vae.encode(lq).latent_dist
        z = dist.sample() if sample else dist.mode()
        if self.kind == "zimage":
            return z
        b, c, h, w = z.shape
        z = z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)
        mean, std = self._bn(z)
        return (z - mean) / std

    def forward_generator(self, z_lq: torch.Tensor) -> torch.Tensor:
        sigmas = torch.tensor([800 / 1000.0, 0], dtype=torch.float32)
        timesteps = torch.full((z_lq.shape[0],), 800, dtype=torch.long)
        if self.kind == "zimage":
            t = (1000 - timesteps) / 1000
            x = list(z_lq.to(self.weight_dtype).unsqueeze(2).unbind(dim=0))
            embeds = [e.to(self.weight_dtype) for e in self.c_txt["prompt_embeds"]]
            out = self.G(x, t, embeds)[0]
            noise_pred = -torch.stack([o.float() for o in out], dim=0).squeeze(2)
            return z_lq.float() - (sigmas[0] - sigmas[1]) * noise_pred.float()
        b, c, h, w = z_lq.shape
        packed = z_lq.reshape(b, c, h * w).permute(0, 2, 1)
        hs, ws = torch.meshgrid(torch.arange(h, dtype=self.weight_dtype), torch.arange(w, dtype=self.weight_dtype),
                                indexing="ij")
        img_ids = torch.zeros(b, h * w, 4, dtype=self.weight_dtype)
        img_ids[:, :, 1], img_ids[:, :, 2] = hs.reshape(-1), ws.reshape(-1)
        noise_pred = self.G(hidden_states=packed.to(self.weight_dtype),
                            timestep=timesteps.to(self.weight_dtype) / 1000, guidance=None,
                            encoder_hidden_states=self.c_txt["text_embeds"].to(self.weight_dtype),
                            txt_ids=self.c_txt["text_ids"].to(self.weight_dtype), img_ids=img_ids,
                            joint_attention_kwargs=None, return_dict=False)[0]
        denoised = packed.float() - (sigmas[0] - sigmas[1]) * noise_pred.float()
        return denoised.permute(0, 2, 1).reshape(b, c, h, w)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        if self.kind == "zimage":
            latents = latents / self.vae.config.scaling_factor + self.vae.config.shift_factor
            return self.vae.decode(latents.to(self.weight_dtype).contiguous(), return_dict=False)[0]
        mean, std = self._bn(latents)
        latents = latents * std + mean
        b, c, h, w = latents.shape
        latents = latents.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, h * 2, w * 2)
        return self.vae.decode(latents.to(self.weight_dtype), return_dict=False)[0]


def _tile_coords(H: int, W: int, tile: int, overlap: int):
    stride = max(1, tile - overlap)
    ys, xs = list(range(0, max(1, H - tile + 1), stride)), list(range(0, max(1, W - tile + 1), stride))
    if ys[-1] != max(0, H - tile):
        ys.append(max(0, H - tile))
    if xs[-1] != max(0, W - tile):
        xs.append(max(0, W - tile))
    return tuple((y, x) for y in ys for x in xs)


def released_infer_tiled(image: torch.Tensor, model: ReleasedInfer, tile: int, overlap: int, sample: bool = True,
                         autocast: bool = False) -> torch.Tensor:
    """``infer_tiled`` of test_flux.py / test_zimage.py (the conditioning prepared beforehand)."""
    orig_H, orig_W = image.shape[-2:]
    image = F.pad(image, (0, (-orig_W) % 16, 0, (-orig_H) % 16), mode="reflect")
    H, W = image.shape[-2:]
    out_acc, w_acc = torch.zeros(1, 3, H, W), torch.zeros(1, 1, H, W)
    for y, x in _tile_coords(H, W, tile, overlap):
        patch = image[:, :, y:y + tile, x:x + tile]
        ph, pw = patch.shape[-2:]
        mask = torch.ones(1, 1, ph, pw)
        if y > 0:
            mask[:, :, :overlap, :] *= torch.linspace(0, 1, overlap).view(1, 1, -1, 1)
        if y + tile < H:
            mask[:, :, -overlap:, :] *= torch.linspace(1, 0, overlap).view(1, 1, -1, 1)
        if x > 0:
            mask[:, :, :, :overlap] *= torch.linspace(0, 1, overlap).view(1, 1, 1, -1)
        if x + tile < W:
            mask[:, :, :, -overlap:] *= torch.linspace(1, 0, overlap).view(1, 1, 1, -1)
        lq = (patch * 2.0 - 1.0).to(dtype=model.weight_dtype)
        with torch.no_grad(), torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=autocast):
            img_patch = model.decode_latents(model.forward_generator(model.encode(lq, sample))).float()
        out_acc[:, :, y:y + ph, x:x + pw] += img_patch * mask
        w_acc[:, :, y:y + ph, x:x + pw] += mask
    out = (out_acc / w_acc.clamp_min(1e-6)).clamp(-1, 1)
    return ((out + 1.0) / 2.0)[:, :, :orig_H, :orig_W]


# ---------------------------------------------------------------------------------------------- tests
def _ours(kind: str, text: bool, folder, precision: str, latents: str = "sample") -> StrSRInference:
    gen = OneStepDiTGenerator(_backend(kind, precision), _condition(text), lora=None)
    return StrSRInference(gen, str(folder), tile=TILE, tile_overlap=OVERLAP, latents=latents,
                          autocast="bf16" if precision == "bf16" else None)


def _lq(seed: int = 7) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.rand(1, 3, 16, 12)  # x4: 64 x 48 -> tiles at rows 0, 24, 32 and columns 0, 16


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("kind,text", [("flux2", False), ("zimage", False), ("flux2", True)])
def test_predict_equals_the_released_inference(released, kind: str, text: bool, precision: str) -> None:
    ours = _ours(kind, text, released[kind, text].folder, precision)
    assert ours.weights == "released" and (ours.generator.mlp is None) == text
    ref_model = ReleasedInfer(kind, _backend(kind, precision), released[kind, text].folder,
                              torch.bfloat16 if precision == "bf16" else torch.float32, text)
    lq = _lq()
    with torch.no_grad():
        ref_model.prepare(ours.generator.condition(lq, 1))
        torch.manual_seed(11)  # the latent is sampled: the same noise on both sides (one draw per tile, same order)
        ref = released_infer_tiled(F.interpolate(lq, scale_factor=4, mode="bicubic").clamp(0, 1), ref_model, TILE,
                                   OVERLAP, autocast=precision == "bf16")
        torch.manual_seed(11)
        sr = ours.predict_step({"lq": lq, "name": ["a"], "scale": 4}, 0)["sr"]
    assert sr.shape == ref.shape == (1, 3, 64, 48)
    err, mean = (sr - ref).abs().max().item(), (sr - ref).abs().mean().item()
    assert err <= TOL[precision][0] and mean <= TOL[precision][1], f"{kind} {precision}: {err:.2e} / {mean:.2e}"


def test_latent_mode_and_tiling_match_the_released_code(released) -> None:
    ours = _ours("zimage", False, released["zimage", False].folder, "fp32", latents="mode")
    ref_model = ReleasedInfer("zimage", _backend("zimage", "fp32"), released["zimage", False].folder,
                              torch.float32, False)
    lq = _lq(8)
    with torch.no_grad():
        ref_model.prepare(ours.generator.condition(lq, 1))
        ref = released_infer_tiled(F.interpolate(lq, scale_factor=4, mode="bicubic").clamp(0, 1), ref_model, TILE,
                                   OVERLAP, sample=False)
        a = ours(lq)
        b = ours(lq)
        ours.tile = 64  # one tile covers the 64 x 48 input
        whole = ours(lq)
        ours.tile, ours.blend = TILE, "linear"  # our training module's symmetric ramps instead of the feather
        linear = ours(lq)
        ours.blend, ours.latents = "feather", "sample"
        c = ours(lq)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - ref).abs().max().item() <= TOL["fp32"][0]
    assert (whole - ref).abs().max().item() > 1e-2  # the tiles matter
    assert (linear - ref).abs().max().item() > 1e-3  # and so does the released feather
    assert (c - a).abs().max().item() > 1e-2  # sampling the posterior changes the output


def test_released_layout_keys_and_round_trip(released, tmp_path) -> None:
    src = released["flux2", False]
    state = torch.load(src.folder / RELEASED_LORA_FILE)
    assert all(k.startswith("base_model.model.") and ".default.weight" in k for k in state)
    assert all(v.dtype == torch.float32 for v in state.values())
    proj = torch.load(src.folder / RELEASED_PROJECTOR_FILE)
    assert sorted(proj) == ["0.bias", "0.weight", "2.bias", "2.weight"] and proj["0.weight"].dtype == torch.bfloat16
    gen = OneStepDiTGenerator(_backend("flux2", "fp32"), _condition(False), lora=None)
    load_released(gen, src.folder)
    assert gen.active_adapter == "strsr" and not any(p.requires_grad for p in gen.parameters())
    mine = dict(gen.backend.transformer.named_parameters())
    for name, p in src.gen.backend.transformer.named_parameters():
        if ".lora_" in name:
            torch.testing.assert_close(mine[name], p, rtol=0, atol=0)  # fp32 LoRA: exact
    save_released(gen, tmp_path / "again")
    again = torch.load(tmp_path / "again" / RELEASED_LORA_FILE)
    assert again.keys() == state.keys() and all(torch.equal(again[k], state[k]) for k in state)
    # a key missing, or a file of another backbone, is refused
    del state[next(iter(state))]
    torch.save(state, tmp_path / RELEASED_LORA_FILE)
    with pytest.raises(RuntimeError, match="missing"):
        load_released(OneStepDiTGenerator(_backend("flux2", "fp32"), _condition(False), lora=None), tmp_path / RELEASED_LORA_FILE)
    with pytest.raises(RuntimeError, match="does not match"):
        load_released(OneStepDiTGenerator(_backend("zimage", "fp32"), _condition(False), lora=None), src.folder)


def test_cached_features_replace_the_vlm(released, monkeypatch: pytest.MonkeyPatch) -> None:
    """A predict / test batch that carries the data pipeline's cached VLM features (``cond_features``) gives the
    output of the live VLM, and the VLM does not run."""
    ours = _ours("flux2", False, released["flux2", False].folder, "fp32", latents="mode")
    lq = _lq(9)
    with torch.no_grad():
        live = ours.predict_step({"lq": lq, "name": ["a"]}, 0)["sr"]
        features = ours.generator.condition(lq, 1)  # (1, L, VLM width): what datamodules.precompute stores

    def no_vlm(*args, **kwargs):
        raise AssertionError("the VLM ran although the batch carries cached features")

    monkeypatch.setattr(VLMCondition, "forward", no_vlm)
    cached = ours.predict_step({"lq": lq, "name": ["a"], "cond_features": features}, 0)["sr"]
    torch.testing.assert_close(cached, live, rtol=0, atol=0)
    with pytest.raises(AssertionError, match="the VLM ran"):
        ours.predict_step({"lq": lq, "name": ["a"]}, 0)
