"""The StrSR recipe of the real configs, value by value, as docs/RECIPES.md states it: the paper (StrSR sec. 4.1,
eq. 7-11) where it gives a value, else the released code (jkwang28/StrSR at commit
46e57115de967b19bb27c5c783bc5bcb819c86a4: ``configs/{flux,zimage}_train_stage{1,2}.yaml``, ``HYPIR/trainer/*``).
The configs are composed and resolved as ``--print_config`` shows them; nothing is instantiated."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.conditions.vlm import RELEASED_CODE_PROMPT
from parsed_configs import load_config  # each repository config parsed once per session

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module", params=["flux2", "zimage"])
def config(request: pytest.FixtureRequest) -> dict:
    return load_config(CONFIGS / f"strsr_{request.param}.yaml")


def test_generator_and_condition(config: dict) -> None:
    gen = config["model"]["init_args"]["generator"]["init_args"]
    assert gen["sigma"] == 0.8  # released model_t = coeff_t = 800
    lora = gen["lora"]  # paper: rank 256; code: alpha = rank, gaussian init, the backend's target list
    assert (lora["rank"], lora["alpha"], lora["init"], lora["target_modules"]) == (256, 256, "gaussian", None)
    assert lora.get("dropout", 0.0) == 0.0
    assert gen.get("clamp_train", False) is False  # released losses see the unclamped decoder output
    cond = gen["condition"]["init_args"]
    assert cond["vlm"]["pretrained"] == "Qwen/Qwen3-VL-4B-Instruct"  # paper sec. 4.1
    assert cond["prompt"] == RELEASED_CODE_PROMPT and cond["pre_resize_factor"] == 28
    assert cond["max_tokens"] == 512  # released FLUX truncation (Z-Image: never reached by the ~80 prompt tokens)


def test_backends(config: dict) -> None:
    backend = config["model"]["init_args"]["generator"]["init_args"]["backend"]
    if backend["class_path"].endswith("ZImageBackend"):
        assert backend["init_args"]["transformer"]["pretrained"] == "Tongyi-MAI/Z-Image-Turbo"
        assert backend["init_args"]["latent_convention"] == "released"
    else:
        assert backend["init_args"]["transformer"]["pretrained"] == "black-forest-labs/FLUX.2-klein-base-4B"
    assert backend["init_args"]["dtype"] == "bf16"


def test_discriminator_and_adversarial_terms(config: dict) -> None:
    model = config["model"]["init_args"]
    disc = model["discriminator"]["init_args"]
    assert model["discriminator"]["class_path"].endswith("CLIPConvNeXtDiscriminator")
    assert disc["stages"] == [0, 1, 2] and disc["pooled"] is True and disc["head_width"] == 512
    assert disc.get("diffaug", "") == ""  # the released discriminator augments nothing
    assert model["adversarial"]["class_path"].endswith(".RaGAN")
    assert model["adversarial"].get("init_args", {}).get("form", "released") == "released"
    assert model["r1"]["init_args"] == {"weight": 10.0, "noise": "uniform", "scale": 0.005}
    assert model["gan_weight"] == 0.1 and model["disc_weight"] == 1.0  # paper lambda_2 = 0.1; L_D unweighted


def test_reconstruction_optimisers_and_schedule(config: dict) -> None:
    model = config["model"]["init_args"]
    rec = model["reconstruction"]["init_args"]
    assert rec["weights"] == {"l1": 1.0, "lpips": 3.0, "fdl": 0.002}  # eq. 11: 1, lambda_1 = 3, lambda_3 = 0.002
    assert rec["start_steps"] == {"fdl": 40000}
    for name in ("l1", "fdl"):  # both on [-1, 1] images, as released
        assert rec["terms"][name].get("init_args", {}).get("pixel_range", "-1,1") == "-1,1", name
    assert rec["terms"]["fdl"]["init_args"]["num_projections"] == 256
    for opt, lr in (("optimizer_g", 5e-6), ("optimizer_d", 1e-6)):
        assert model[opt]["class_path"] == "torch.optim.AdamW"
        assert model[opt]["init_args"]["lr"] == lr and model[opt]["init_args"]["weight_decay"] == 0.01
    assert model["grad_clip"] == 1.0 and model["accumulate"] == 1 and model["alternate"] is True
    assert config["trainer"]["max_steps"] == 60000
    assert (model["tile"], model["tile_overlap"]) == (1024, 64)


def test_data(config: dict) -> None:
    data = config["data"]
    assert data["crop"] == "center" and data["flip"] is False and data["crop_size"] == 1024
    assert data["batch_size"] == 1
    deg = data["degradation"]["init_args"]
    assert deg["preset"] == "realesrgan" and deg["scale"] == 4 and deg["sharpen_gt"] is True
    assert deg["pool_size"] == 256 and deg["resize_back"] is True
