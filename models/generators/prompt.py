"""Fixed prompt embedding for the one-step SD generator, computed once (TUDSR: the empty prompt).

TUDSR conditions its UNet on a fixed prompt embedding c (paper eq. 2), the empty prompt, so it is computed once.
The text encoder is loaded, run once and dropped; only the (1, L, D) tensor is kept (optionally cached on disk).
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import torch

from models.pretrained import Source, from_hf, load_or_build

__all__ = ["compute_prompt_embedding", "empty_prompt_ids"]

_CACHE_KEY = "prompt_embeds"


def empty_prompt_ids(config) -> torch.Tensor:  # config: transformers.CLIPTextConfig
    """Token ids of the empty prompt without a tokenizer: ``[BOS, EOS, PAD, ..., PAD]``, length
    ``max_position_embeddings`` (what ``CLIPTokenizer("", padding="max_length")`` gives). Used only for text
    encoders built from a tiny architecture config (tokenizers cannot be downloaded); the special ids come from
    the config, so they must lie inside its vocabulary. Returns (1, L) int64."""
    length, vocab = int(config.max_position_embeddings), int(config.vocab_size)
    ids = {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id, "pad_token_id": config.pad_token_id}
    for key, value in ids.items():
        if value is None or not 0 <= int(value) < vocab:
            raise ValueError(
                f"text encoder config: {key}={value} is not inside the vocabulary (size {vocab}); set bos_token_id, "
                "eos_token_id and pad_token_id in a tiny config, or give a tokenizer"
            )
    out = torch.full((1, length), int(config.pad_token_id), dtype=torch.long)
    out[0, 0], out[0, 1] = int(config.bos_token_id), int(config.eos_token_id)
    return out


def _load_tokenizer(source: Source):
    from transformers import CLIPTokenizer

    def load(path: str, src: Source, local_only: bool):
        kwargs = {"local_files_only": local_only}
        if src.subfolder:
            kwargs["subfolder"] = src.subfolder
        if src.revision:
            kwargs["revision"] = src.revision
        return CLIPTokenizer.from_pretrained(path, **kwargs)

    # config: constructor arguments, e.g. {"vocab_file": ..., "merges_file": ...} of local files
    return load_or_build("SD2.1-base tokenizer", source, load, lambda cfg: CLIPTokenizer(**cfg), "tokenizer.pretrained")


def _read_cache(path: Path, prompt: str) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        cached_prompt = (f.metadata() or {}).get("prompt")
        if cached_prompt is not None and cached_prompt != prompt:
            raise ValueError(f"prompt cache '{path}' holds the embedding of {cached_prompt!r}, not of {prompt!r}; "
                             "delete it or point `prompt_cache` elsewhere")
        return f.get_tensor(_CACHE_KEY)


@torch.no_grad()
def compute_prompt_embedding(
    text_encoder: Source | None = None,
    tokenizer: Source | None = None,
    prompt: str = "",
    cache: str | None = None,
    shape: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """The encoder hidden states of ``prompt``: (1, L, D) float32 on the CPU (L = 77 for CLIP); built under
    ``torch.device("meta")`` (a shape-only model, e.g. the memory planner) it is a meta tensor and nothing is cached.

    Order of resolution:
      1. ``cache`` names an existing safetensors file: read it (the text encoder is never loaded);
      2. ``text_encoder`` given: CLIPTextModel (``from_hf``), ids from the ``tokenizer`` (padding to
         ``model_max_length``, as the SD pipelines do; last hidden state). A text encoder built from a config may
         go without tokenizer, but only for the empty prompt (see :func:`empty_prompt_ids`); a pretrained one needs
         its tokenizer (its config's special ids are not the tokenizer's). The encoder is dropped afterwards;
      3. neither: zeros of ``shape`` (a null condition for smoke tests without a text encoder).
    The result is written to ``cache`` when given and computed.
    """
    cache_path = Path(os.path.expanduser(cache)) if cache else None
    if cache_path is not None and cache_path.is_file():
        return _read_cache(cache_path, prompt)
    if text_encoder is not None:
        from transformers import CLIPTextConfig, CLIPTextModel

        encoder = from_hf("SD2.1-base text encoder", CLIPTextModel, text_encoder, config_cls=CLIPTextConfig,
                          yaml_key="text_encoder.pretrained").eval()
        if tokenizer is not None:
            tok = _load_tokenizer(tokenizer)
            ids = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids  # (1, L)
        elif text_encoder.config is not None and prompt == "":
            ids = empty_prompt_ids(encoder.config)  # (1, L)
        else:
            raise ValueError("a tokenizer source is needed for a pretrained text encoder or a non-empty prompt "
                             "(e.g. tokenizer: {pretrained: <SD repo>, subfolder: tokenizer})")
        embeds = encoder(ids.to(encoder.device)).last_hidden_state.float()  # (1, L, D)
        if not embeds.is_meta:  # a real encoder's output moves to the CPU; on the meta device it stays a shape
            embeds = embeds.cpu()
        del encoder
        gc.collect()
    elif shape is not None:
        embeds = torch.zeros(tuple(shape), dtype=torch.float32)
    else:
        raise ValueError("compute_prompt_embedding needs a text_encoder, an existing cache file or a shape")
    if cache_path is not None and not embeds.is_meta:  # nothing to write for a shape-only (meta) embedding
        from safetensors.torch import save_file

        cache_path.parent.mkdir(parents=True, exist_ok=True)
        save_file({_CACHE_KEY: embeds.contiguous()}, str(cache_path), metadata={"prompt": prompt})
    return embeds
