"""Files written through ``save_safetensors`` get the umask's mode, not safetensors' private 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from models.safetensors_io import current_umask, save_safetensors


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_mode_follows_the_umask(tmp_path: Path, mask: int, expected: int) -> None:
    old = os.umask(mask)
    try:
        assert current_umask() == mask
        path = save_safetensors({"a": torch.arange(3.0)}, tmp_path / "a.safetensors", metadata={"k": "v"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == expected
    from safetensors.torch import load_file

    torch.testing.assert_close(load_file(str(path))["a"], torch.arange(3.0))


def test_lora_export_is_readable_by_the_group(tmp_path: Path) -> None:
    """The adapter file itself (not only the callback's copy) is 0644 under umask 022."""
    from diffusers import UNet2DConditionModel

    from models.lora import LoraConfig, add_adapter, save_adapter

    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=8,
                                attention_head_dim=2, norm_num_groups=4)
    add_adapter(unet, LoraConfig(rank=2, alpha=2, target_modules=["to_q"]), "a")
    old = os.umask(0o022)
    try:
        path = Path(save_adapter(unet, "a", tmp_path / "a.safetensors"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
