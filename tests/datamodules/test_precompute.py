"""Precomputing VLM features into a FeatureCache from a training config (datamodules/precompute.py)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from datamodules.datasets import HQImageDataset, center_crop
from datamodules.images import bundled_photo_tensors
from datamodules.precompute import (
    MANIFEST, build_condition, cache_tag, condition_section, main, open_cache, precompute, training_images,
)
from models.conditions import VLMCondition
from parsed_configs import load_config  # each repository config parsed once per session

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo" / "strsr_flux2.yaml"
CONFIG = load_config(DEMO)  # merged (composed) config, as the CLI sees it


def test_training_images_are_the_dataset_ids_with_their_training_crops() -> None:
    data = {**CONFIG["data"], "crop": "center", "flip": False}  # StrSR: the released centre crops, no flips
    items = list(training_images(data, "center", limit=2))
    train = HQImageDataset(None, crop_size=96, crop="center", flip=False)  # what the DataModule trains on
    assert [i for i, _ in items] == train.paths[:2]  # the keys batch["path"] holds
    for index, (image_id, hq) in enumerate(items):
        assert torch.equal(hq, train[index]["gt"])  # exactly the training crop (before the degradation)
    photos = dict(bundled_photo_tensors())
    random_items = list(training_images({**CONFIG["data"], "crop": "random"}, "center", limit=1))
    for image_id, hq in random_items:  # random crops have no fixed crop: the centre window
        assert torch.equal(hq, center_crop(photos[image_id.removeprefix("skimage.data/")], 96))
    full_items = list(training_images(CONFIG["data"], "full", limit=1))
    assert torch.equal(full_items[0][1], photos[full_items[0][0].removeprefix("skimage.data/")])


def test_precompute_writes_the_vlm_features_of_the_bicubic_lr(tmp_path) -> None:
    cache, written = precompute(CONFIG, str(tmp_path), limit=2, dtype="fp32")
    assert written == 2
    condition = build_condition(condition_section(CONFIG))  # only the condition is built
    assert isinstance(condition, VLMCondition) and condition.vlm is not None
    for image_id, hq in training_images(CONFIG["data"], "center", limit=2):
        n_text = len(condition.prompt_ids) - 1  # image placeholder dropped; the demo prompt is below max_tokens
        assert cache.load(image_id).shape == (min(n_text, condition.max_tokens), condition.feature_dim)
    reopened, info = open_cache(str(tmp_path))
    assert reopened.tag == cache.tag and info["feature_dim"] == 24 and info["view"] == "center"
    assert precompute(CONFIG, str(tmp_path), limit=2, dtype="fp32")[1] == 0  # present entries are kept


def test_cached_features_equal_a_direct_vlm_forward(tmp_path) -> None:
    """The stored entry is exactly the live VLM's features of the same LR input: E_VLM(bicubic_lr(training crop)) of
    the condition the config builds (the one the training step runs when no cache is given)."""
    built: list[VLMCondition] = []
    import datamodules.precompute as pre

    original = pre.build_condition

    def keep(section):  # the very instance precompute uses, to recompute its output independently
        built.append(original(section))
        return built[-1]

    pre.build_condition = keep
    try:
        cache, _ = precompute(CONFIG, str(tmp_path), limit=1, dtype="fp32")
    finally:
        pre.build_condition = original
    image_id, hq = next(training_images(CONFIG["data"], "center", limit=1))
    lr = torch.nn.functional.interpolate(hq[None], size=(24, 24), mode="bicubic", align_corners=False,
                                         antialias=True).clamp(0, 1)  # (1, 3, 24, 24): x4 down of the 96 crop
    assert torch.allclose(cache.load(image_id), built[0](lr, 1)[0], atol=1e-6)


def test_tag_follows_view_prompt_and_vlm() -> None:
    section = condition_section(CONFIG)
    base = cache_tag(section, "center", 96, 4)
    other_prompt = copy.deepcopy(section)
    other_prompt["init_args"]["prompt_ids"] = [1, 62, 60, 63, 3]
    other_sizing = copy.deepcopy(section)
    other_sizing["init_args"]["pre_resize_factor"] = None
    other_vlm = copy.deepcopy(section)
    other_vlm["init_args"]["vlm"] = {"pretrained": "Qwen/Qwen3-VL-4B-Instruct"}
    tags = {base, cache_tag(section, "full", 96, 4), cache_tag(section, "center", 128, 4),
            cache_tag(other_prompt, "center", 96, 4), cache_tag(other_vlm, "center", 96, 4),
            cache_tag(section, "center", 96, 4, crop_mode="center"), cache_tag(other_sizing, "center", 96, 4)}
    assert len(tags) == 7 and "Qwen/Qwen3-VL-4B-Instruct" in cache_tag(other_vlm, "center", 96, 4)


def test_command_line_and_errors(tmp_path, capsys) -> None:
    assert main(["--config", str(DEMO), "--out", str(tmp_path / "c"), "--limit", "1", "--device", "cpu"]) == 0
    assert len(list((tmp_path / "c").glob("*/*.safetensors"))) == 1
    assert json.loads((tmp_path / "c" / MANIFEST).read_text())["dtype"] == "bf16"
    assert "wrote 1 feature entries" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="python -m datamodules.precompute"):
        open_cache(str(tmp_path / "missing"))
    cache_only = copy.deepcopy(CONFIG)
    condition_section(cache_only)["init_args"] = {"vlm": None, "feature_dim": 24}
    with pytest.raises(ValueError, match="no VLM"):
        precompute(cache_only, str(tmp_path / "d"))
    # the real config without weights: one clear message, exit status 2
    assert main(["--config", str(DEMO.parents[1] / "strsr_flux2.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert "error:" in capsys.readouterr().err
