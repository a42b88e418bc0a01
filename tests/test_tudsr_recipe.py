"""The TUDSR recipe of the real configs, value by value, as docs/RECIPES.md states it: the paper (TUDSR sec. 3.5-4.1,
eq. 2-9, Algorithms 1-2) where it gives a value, else its nearest public relatives (wuer5/OMGSR, same first author;
cswry/SeeSR, whose data set-up the paper adopts). The configs are composed and resolved as ``--print_config`` shows
them; nothing is instantiated."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.crops import folder_specs
from parsed_configs import load_config  # each repository config parsed once per session

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2", "conv_shortcut", "conv", "conv_in", "conv_out"]


@pytest.fixture(scope="module", params=["stage1", "stage2", "stage2_m4n2"])
def config(request: pytest.FixtureRequest) -> dict:
    return load_config(CONFIGS / f"{request.param}.yaml")


def test_generator(config: dict) -> None:
    init = config["model"]["init_args"]
    gen = init["generator"]["init_args"]
    stage2 = init["generator"]["init_args"]["adapter_name"] == "stage2"
    assert gen["timestep"] == (50 if stage2 else 200)  # t1 = 200 (Alg. 1), t2 = 50 (Alg. 2)
    assert gen["unet"]["pretrained"].endswith("stable-diffusion-2-1-base") and gen["prompt"] == ""
    lora = gen["lora"]  # sec. 4.1: rank 32 for both stages; alpha = rank, gaussian init, OMGSR's UNet targets
    assert (lora["rank"], lora["alpha"], lora["init"], lora["target_modules"]) == (32, 32, "gaussian", LORA_TARGETS)
    assert gen["latent_mode"] == "sample" and gen["dtype"] == "bf16"
    if stage2:
        assert (init["t1"], init["n"], init["chunk"], init["per_chunk_step"]) == (200, 2, 512, True)


def test_discriminator_and_losses(config: dict) -> None:
    init = config["model"]["init_args"]
    disc = init["discriminator"]["init_args"]
    assert init["discriminator"]["class_path"].endswith("DINOv3Discriminator")
    assert disc["backbone"]["pretrained"] == "facebook/dinov3-vitb16-pretrain-lvd1689m"  # sec. 3.5: DINOv3-ViT-B
    assert (disc["layers"], disc["head_width"], disc["diffaug"]) == ([3, 6, 9], 128, "")
    rec = init["reconstruction"]["init_args"]
    assert rec["weights"] == {"ea_dists": 5.0, "mae": 0.5}  # eq. 8: lambda1 = 5, lambda3 = 0.5
    assert rec["terms"]["ea_dists"]["class_path"].endswith("EdgeAwareDISTS")
    assert rec["terms"]["mae"]["init_args"]["pixel_range"] == "-1,1"  # OMGSR: l1_loss on [-1, 1] images
    adv = init["adversarial"]
    assert adv["class_path"].endswith("SoftLabelBCE")  # eq. 6, 7: labels 0.8 / 0.8 / 0, levels averaged
    assert (adv["init_args"]["real_label"], adv["init_args"]["gen_label"], adv["init_args"]["fake_label"]) == \
        (0.8, 0.8, 0.0)
    assert adv["init_args"].get("reduce_levels", "mean") == "mean"
    assert (init["gan_weight"], init["disc_weight"]) == (0.5, 0.5)  # eq. 8, 9: lambda2 = 0.5
    assert init.get("r1") is None


def test_optimisation_and_schedule(config: dict) -> None:
    """Sec. 4.1: AdamW 5e-5, batch 1, 4 accumulation steps, 5,100 / 3,500 steps on 4 GPUs: one run makes that many
    generator updates per GPU (README "Paper steps and max_steps")."""
    init = config["model"]["init_args"]
    for key in ("optimizer_g", "optimizer_d"):
        opt = init[key]
        assert opt["class_path"] == "torch.optim.AdamW"
        args = opt["init_args"]  # weight decay, betas, eps: OMGSR configs/omgsr_s_512.yml
        assert (args["lr"], args["weight_decay"], tuple(args["betas"]), args["eps"]) == (5e-5, 1e-4, (0.9, 0.999), 1e-8)
    assert init["accumulate"] == 4 and init["grad_clip"] == 1.0 and config["data"]["batch_size"] == 1
    stage2 = init["generator"]["init_args"]["adapter_name"] == "stage2"
    assert config["trainer"]["max_steps"] == (3500 if stage2 else 5100)
    # validation every 1,000 generator updates: Lightning counts val_check_interval in batches (4 per update in
    # stage 1; 1 per update in stage 2, whose 4 chunks per batch make one accumulation window)
    assert config["trainer"]["val_check_interval"] == (1000 if stage2 else 4000)
    assert config["trainer"]["callbacks"][0]["init_args"]["every_n_train_steps"] == 1000  # checkpoints, G updates


def test_data(config: dict) -> None:
    data = config["data"]
    specs = folder_specs(data["train_dirs"], data["crop"])
    assert [(s.path, s.crop, s.limit) for s in specs] == [("data/LSDIR/HR", "random", None),
                                                          ("data/FFHQ", "resize", 10000)]
    assert data["flip"] is True
    stage2 = config["model"]["init_args"]["generator"]["init_args"]["adapter_name"] == "stage2"
    assert data["crop_size"] == (1024 if stage2 else 512)  # R = 512; stage 2: N x R
    deg = data["degradation"]["init_args"]
    assert deg["preset"] == "light" and deg["sharpen_gt"] is False and deg["pool_size"] == 0  # SeeSR: plain GT
    assert deg["resize_back"] is True and deg["round_lq_up"] is True


def test_stage2_lq_scale_m2n2_and_m4n2() -> None:
    """The LQ stage 2 trains on: x4 (256 -> 512 -> 1024, M2N2) by default, x8 (128 -> 512 -> 1024, M4N2) in
    configs/stage2_m4n2.yaml; GT / (M x N) = LQ and M x LQ = R in both."""
    for name, (m, scale) in {"stage2": (2, 4), "stage2_m4n2": (4, 8)}.items():
        cfg = load_config(CONFIGS / f"{name}.yaml")
        init, crop = cfg["model"]["init_args"], cfg["data"]["crop_size"]
        assert (init["m"], cfg["data"]["degradation"]["init_args"]["scale"]) == (m, scale)
        assert crop // scale * m == init["chunk"] and m * init["n"] == scale


def test_inference() -> None:
    """Fig. 2(b): x4 = M2N2, x8 = M4N2 with t1 = 200, t2 = 50; tiling and colour fix as the relatives do."""
    for name, m in (("predict_x4", 2), ("predict_x8", 4)):
        cfg = load_config(CONFIGS / f"{name}.yaml")
        pipe = cfg["model"]["init_args"]["pipeline"]["init_args"]
        assert (pipe["m"], pipe["n"], pipe["t1"], pipe["t2"]) == (m, 2, 200, 50)
        assert (pipe["latent_tile"], pipe["latent_overlap"], pipe["color_fix"], pipe["dtype"]) == (64, 32, "adain",
                                                                                                  "bf16")
        assert pipe["vae_tile"] == 1024
