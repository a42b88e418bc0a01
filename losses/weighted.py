"""Weighted sum of reconstruction terms with per-term start steps (TUDSR lambda1/lambda3, StrSR phase switch)."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["WeightedLoss"]


class WeightedLoss(nn.Module):
    """``total = sum_i w_i * term_i(sr, gt)`` over the *active* terms.

    A term is active at ``step`` when its weight is non-zero and ``step >= start_steps[name]`` (default 0); an
    inactive term is not computed at all. Terms without an entry in ``weights`` have weight 1.0. E.g. StrSR:
    ``terms={l1, lpips, fdl}``, ``weights={l1: 1, lpips: 3, fdl: 0.002}``, ``start_steps={fdl: 40000}``.

    Args:
        terms: name -> loss module called as ``term(sr, gt) -> scalar``.
        weights: name -> weight (subset of ``terms``).
        start_steps: name -> first step at which the term is used (subset of ``terms``).
    """

    def __init__(
        self,
        terms: dict[str, nn.Module],
        weights: dict[str, float],
        start_steps: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        start_steps = dict(start_steps or {})
        for kind, mapping in (("weights", weights), ("start_steps", start_steps)):
            for key in mapping:
                if key not in terms:
                    raise ValueError(f"WeightedLoss: {kind} names '{key}', which is not a term ({sorted(terms)})")
        self.terms = nn.ModuleDict(terms)
        self.weights = {name: float(weights.get(name, 1.0)) for name in terms}
        self.start_steps = {name: int(start_steps.get(name, 0)) for name in terms}

    def active(self, name: str, step: int) -> bool:
        """Whether term ``name`` is computed at ``step``."""
        if name not in self.weights:
            raise KeyError(f"WeightedLoss: no term '{name}' ({sorted(self.weights)})")
        return self.weights[name] != 0.0 and step >= self.start_steps[name]

    def forward(self, sr: Tensor, gt: Tensor, step: int = 0) -> tuple[Tensor, dict[str, Tensor]]:
        """sr, gt: (B, 3, H, W) in [0, 1]. Returns (total scalar, {name: detached *unweighted* value} of the
        active terms). With no active term the total is ``0 * sr.sum()`` (still backward-able)."""
        total: Tensor | None = None
        values: dict[str, Tensor] = {}
        for name, term in self.terms.items():
            if not self.active(name, step):
                continue
            value = term(sr, gt)
            values[name] = value.detach()
            weighted = self.weights[name] * value
            total = weighted if total is None else total + weighted
        if total is None:
            total = sr.sum() * 0.0
        return total, values
