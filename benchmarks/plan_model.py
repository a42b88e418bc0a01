"""The parts of the plan that are arithmetic on a built (meta) module rather than a traced step.

- :func:`fsdp_split`: which bytes ``plugins.fsdp.LoRAFSDPStrategy`` shards and which it replicates, from the
  strategy's own wrap policy and :func:`plugins.fsdp.frozen_outside_units`;
- :func:`fsdp_peak`: the per-GPU peak over N GPUs from the single-GPU trace;
- :class:`VLMStandIn`: the Qwen3-VL forward as a shape with its FLOPs counted analytically (the transformers model
  reads token ids and image grids as values, which meta tensors do not have);
- :func:`zero_adapter_file`: an exported LoRA file of the real shapes (zeros) for stage 2 and inference.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
import torch
from torch import nn

from benchmarks.meta_device import rounded, storage_bytes

__all__ = ["H100_BF16_PEAK", "MFU", "seconds", "network_params", "fsdp_split", "fsdp_peak", "VLMStandIn",
           "zero_adapter_file"]

#: dense bf16 tensor-core peak of an H100 SXM (FLOP/s)
H100_BF16_PEAK = 989e12
#: model FLOP utilisation assumed for the time predictions (see README "Performance")
MFU = 0.40


def seconds(flops: float, mfu: float = MFU, peak: float = H100_BF16_PEAK) -> float:
    return flops / (peak * mfu)


def network_params(module: nn.Module, trainable: list[nn.Parameter]) -> tuple[int, int]:
    """(total, trainable) parameter counts of one network, given its trainable parameters."""
    return sum(p.numel() for p in module.parameters()), sum(p.numel() for p in trainable)


def fsdp_split(model: nn.Module, block_classes: tuple[str, ...] | None = None) -> dict[str, int]:
    """Bytes of ``model`` under ``LoRAFSDPStrategy``: ``replicated`` (the frozen networks outside the transformer
    blocks, ``ignored_states``), ``sharded_frozen`` (the blocks' frozen weights), ``trainable`` (LoRA, MLP, heads:
    their own units, sharded) and ``max_unit`` (the largest block, all-gathered whole for its forward)."""
    from plugins.fsdp import DIT_BLOCKS, LoRAWrapPolicy, frozen_outside_units

    policy = LoRAWrapPolicy(block_classes or DIT_BLOCKS)
    replicated = frozen_outside_units(model, policy)
    rep_params = [t for m in replicated for t in list(m.parameters()) + list(m.buffers())]
    rep_ids = {id(t) for t in rep_params}
    frozen_sharded = [p for p in model.parameters() if not p.requires_grad and id(p) not in rep_ids]
    trainable = [p for p in model.parameters() if p.requires_grad]
    blocks = [m for m in model.modules() if isinstance(m, tuple(policy._module_classes))]
    max_unit = max((sum(rounded(p.numel() * p.element_size()) for p in b.parameters() if not p.requires_grad)
                    for b in blocks), default=0)
    return {"replicated": storage_bytes(rep_params), "sharded_frozen": storage_bytes(frozen_sharded),
            "trainable": storage_bytes(trainable), "max_unit": max_unit, "blocks": len(blocks)}


def fsdp_peak(peak_1gpu: int, split: dict[str, int], optimizer_bytes: int, grads_before: int, world: int) -> int:
    """Per-GPU peak under FSDP over ``world`` GPUs (batch 1 per GPU, so the activations are those of one GPU):
    the single-GPU peak minus the shards other ranks hold (frozen block weights, trainable weights, their
    optimizer states and any accumulated gradients) plus two all-gathered units (the running and the prefetched
    block)."""
    sharded = split["sharded_frozen"] + split["trainable"] + optimizer_bytes + grads_before
    return int(peak_1gpu - sharded * (1 - 1 / world) + 2 * split["max_unit"])


class VLMStandIn:
    """Replaces ``VLMCondition.forward`` on a meta model: returns features of the real shape (B, L, D) and adds
    the FLOPs of the Qwen3-VL forward it stands for to :attr:`flops` (per call).

    FLOPs: 2 x (non-embedding language-model parameters) x tokens + 2 x (vision blocks and patch embedding) x
    patches + 2 x (patch mergers) x merged tokens + the attention products (4 x tokens^2 x width per layer, both
    stacks, as ``FlopCounterMode`` counts attention), with the patch and token counts the condition's own
    preprocessing gives (its resize rule at the LR size) and its prompt ids. Within a few % of ``FlopCounterMode``
    on a real forward (tests/benchmarks/test_plan.py)."""

    def __init__(self, condition: nn.Module) -> None:
        self.condition = condition
        self.flops_per_call: list[int] = []

    def _shape_and_flops(self, lq: torch.Tensor) -> tuple[tuple[int, int, int], int]:
        cond = self.condition
        vlm = cond.vlm
        cfg = vlm.config
        text, vision = cfg.text_config, cfg.vision_config
        b = lq.shape[0]
        pixel_values, _ = cond.preprocess(lq)  # (B * gh * gw, C * T * P * P): shapes only
        patches = pixel_values.shape[0] // b
        n_image = patches // cond.merge**2
        n_text = len(cond.prompt_ids) - 1
        tokens = n_image + n_text
        lm = sum(p.numel() for n, p in vlm.language_model.named_parameters() if "embed_tokens" not in n)
        per_patch = sum(p.numel() for n, p in vlm.visual.named_parameters() if n.startswith(("blocks.", "patch_embed.")))
        per_token = sum(p.numel() for n, p in vlm.visual.named_parameters() if "merger" in n)  # on merged tokens
        attention = 4 * tokens**2 * text.num_attention_heads * text.head_dim * text.num_hidden_layers
        attention += 4 * patches**2 * vision.hidden_size * vision.depth
        flops = b * (2 * lm * tokens + 2 * per_patch * patches + 2 * per_token * n_image + attention)
        return (b, min(n_text, cond.max_tokens), int(text.hidden_size)), int(flops)

    @contextmanager
    def active(self) -> Iterator[VLMStandIn]:
        def forward(lq: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
            shape, flops = self._shape_and_flops(lq)
            self.flops_per_call.append(flops)
            dtype = next(self.condition.vlm.parameters()).dtype
            return torch.zeros(shape, dtype=dtype, device=lq.device)

        self.condition.forward = forward
        try:
            yield self
        finally:
            del self.condition.forward


def zero_adapter_file(unet: nn.Module, adapter: str, path: str | os.PathLike) -> str:
    """A LoRA file in the diffusers/peft format of ``models.lora.save_adapter`` with adapter ``adapter``'s keys and
    shapes and zero values (bf16), readable into a meta model (values are never read there)."""
    from safetensors.torch import save_file

    from models.lora import adapter_state_dict

    state = {k: torch.zeros(tuple(v.shape), dtype=torch.bfloat16, device="cpu")
             for k, v in adapter_state_dict(unet, adapter).items()}
    config = unet.peft_config[adapter].to_dict()
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
    metadata = {"format": "pt", "lora_adapter_metadata": json.dumps(config, sort_keys=True, default=str)}
    save_file(state, str(path), metadata=metadata)
    return str(path)
