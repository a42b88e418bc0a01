"""Adaptive MLP f_adapt mapping VLM features to the DiT's text-embedding width (StrSR eq. 5)."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["AdaptiveMLP"]


class AdaptiveMLP(nn.Module):
    """z_VLM = f_adapt(E_VLM(x_LR)) (StrSR eq. 5): Linear(in, hidden) -> SiLU -> Linear(hidden, out).

    Trained with the generator (its parameters are fp32 even over a bf16 backbone). Its output replaces the
    base model's text-encoder embeddings.

    Args:
        in_dim: VLM hidden width (Qwen3-VL-4B: 2560).
        out_dim: the backbone's text width D (FLUX.2 klein-4B ``joint_attention_dim`` 7680, Z-Image
            ``cap_feat_dim`` 2560).
        hidden: hidden width; ``None`` gives ``out_dim // 2`` as in the released code.
    """

    def __init__(self, in_dim: int = 2560, out_dim: int = 7680, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden if hidden is not None else max(out_dim // 2, 1)
        self.in_dim, self.out_dim, self.hidden = in_dim, out_dim, hidden
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, out_dim))

    def forward(self, features: Tensor) -> Tensor:
        """(B, L, in_dim) -> (B, L, out_dim), computed in the MLP's dtype (fp32)."""
        return self.net(features.to(self.net[0].weight.dtype))
