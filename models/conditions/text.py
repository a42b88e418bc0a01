"""Condition encoders for the one-step DiT: the common interface and a fixed text embedding (StrSR sec. 3.2).

A condition turns the raw LR image into the token features that replace the base model's text-encoder output.
:class:`TextEmbeddingCondition` ignores the image: it serves a precomputed prompt embedding (the "w/o VLM"
ablation of StrSR Table 5, or runs without a VLM).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from models.pretrained import WeightArg, declare_weights, load_state_dict_file

__all__ = ["ConditionEncoder", "TextEmbeddingCondition"]


class ConditionEncoder(nn.Module):
    """Frozen condition encoder: ``forward(lq (B,3,h,w) [0,1] | None, batch_size) -> (B, L, feature_dim)``.

    Class attribute ``needs_adapter``: whether the generator must map the features through the trainable
    :class:`~models.conditions.adapter_mlp.AdaptiveMLP` (StrSR eq. 5) even when ``feature_dim`` already equals the
    backbone's text width. Encoders own no trainable parameters and stay in eval mode.
    """

    needs_adapter: bool = False

    @property
    def feature_dim(self) -> int:
        raise NotImplementedError

    def forward(self, lq: Tensor | None, batch_size: int) -> Tensor:
        raise NotImplementedError

    def train(self, mode: bool = True) -> "ConditionEncoder":
        return super().train(False)  # frozen: always eval


@declare_weights(embedding=WeightArg("text condition embedding", file=True))
class TextEmbeddingCondition(ConditionEncoder):
    """A fixed prompt embedding, identical for every image.

    Args:
        embedding: a ``.safetensors`` / ``.pt`` file holding one tensor of shape (L, D) or (1, L, D) (e.g. the
            FLUX.2 klein Qwen3 embedding of the empty prompt padded to 512 tokens, (512, 7680), or Z-Image's
            caption features); the tensor under ``key`` if the file holds several. ``None``: an all-zero
            embedding of shape (``length``, ``dim``). Zeros are *not* the real empty-prompt embedding of any
            model; they are meant for tiny random-init smoke runs where no text encoder exists.
        length: token count of the zero embedding (ignored with a file).
        dim: width of the zero embedding (required without a file).
        key: tensor name inside the file.

    Returns raw features at their stored width: the generator adds an adaptive MLP only when this width differs
    from the backbone's text width (``needs_adapter = False``).
    """

    needs_adapter = False

    def __init__(self, embedding: str | None = None, length: int = 512, dim: int | None = None,
                 key: str = "prompt_embeds") -> None:
        super().__init__()
        if embedding is not None:
            state = load_state_dict_file("text condition embedding", os.path.expanduser(embedding))
            tensor = state[key] if key in state else (next(iter(state.values())) if len(state) == 1 else None)
            if tensor is None:
                raise KeyError(f"'{embedding}' holds {sorted(state)}; name the embedding with `key`")
            tensor = tensor[0] if tensor.ndim == 3 else tensor
        else:
            if dim is None:
                raise ValueError("TextEmbeddingCondition without an `embedding` file needs `dim` (and `length`)")
            tensor = torch.zeros(length, dim)
        if tensor.ndim != 2:
            raise ValueError(f"text embedding must be (L, D) or (1, L, D), got {tuple(tensor.shape)}")
        self.register_buffer("embedding", tensor.float(), persistent=False)  # (L, D), frozen data, not checkpointed

    @property
    def feature_dim(self) -> int:
        return int(self.embedding.shape[1])

    def forward(self, lq: Tensor | None, batch_size: int) -> Tensor:
        return self.embedding.unsqueeze(0).expand(batch_size, -1, -1)  # (B, L, D)
