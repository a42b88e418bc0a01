"""Training folders and crop modes: per-folder count limits in sorted order, OMGSR's Lanczos resize of the FFHQ faces,
the released StrSR ``center_crop_arr``, and ``data.train_dirs`` as one folder or a list, through the CLI."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.crops import TrainFolder, folder_specs, resize_center_crop
from datamodules.datasets import HQImageDataset
from datamodules.images import DataError, uint8_to_tensor

ROOT = Path(__file__).resolve().parents[2]


def save(path: Path, h: int, w: int, seed: int) -> np.ndarray:
    array = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return array


def released_center_crop_arr(pil_image: Image.Image, image_size: int) -> np.ndarray:
    """jkwang28/StrSR ``HYPIR/dataset/utils.py`` ``center_crop_arr`` at 46e57115de967b19bb27c5c783bc5bcb819c86a4
    (after openai/guided-diffusion ``image_datasets.py``), re-implemented from its formula."""
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return arr[crop_y:crop_y + image_size, crop_x:crop_x + image_size]


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    """faces/: 6 images written in shuffled order, one in a subfolder; photos/: 2 wide images."""
    names = ["00003.png", "00000.png", "00005.png", "sub/00001.png", "00002.png", "00004.png"]
    for i, name in enumerate(names):
        save(tmp_path / "faces" / name, 48, 48, seed=i)
    save(tmp_path / "photos" / "p0.png", 70, 90, seed=10)
    save(tmp_path / "photos" / "p1.png", 40, 52, seed=11)
    return tmp_path


def test_limit_keeps_the_first_n_in_sorted_order(folders: Path) -> None:
    faces = folders / "faces"
    every = sorted(str(p) for p in faces.rglob("*.png"))  # the reference: plain sorted paths
    assert [Path(p).name for p in every][:3] == ["00000.png", "00002.png", "00003.png"]  # sub/ sorts after files
    dataset = HQImageDataset([{"path": str(faces), "limit": 3}], crop_size=16)
    assert dataset.paths == every[:3]
    both = HQImageDataset([str(folders / "photos"), TrainFolder(str(faces), limit=2)], crop_size=16)
    assert both.paths == sorted(str(p) for p in (folders / "photos").glob("*.png")) + every[:2]
    assert len(HQImageDataset([TrainFolder(str(faces), limit=100)], crop_size=16)) == len(every)


def test_resize_mode_is_pil_lanczos_of_the_whole_image(folders: Path) -> None:
    """OMGSR's FFHQ handling (wuer5/OMGSR ``dataset/my_dataset.py`` at faeba054: ``gt_img.resize((512, 512),
    Image.Resampling.LANCZOS)``), at 48 -> 16."""
    path = folders / "faces" / "00000.png"
    dataset = HQImageDataset([{"path": str(path.parent), "crop": "resize", "limit": 1}], crop_size=16, flip=False)
    expected = np.asarray(Image.open(path).convert("RGB").resize((16, 16), Image.Resampling.LANCZOS))
    for key in (0, (0, 3, 7)):  # the crop is deterministic: every epoch and position gives the same image
        assert torch.equal(dataset[key]["gt"], uint8_to_tensor(expected))
    flipped = HQImageDataset([{"path": str(path.parent), "crop": "resize", "limit": 1}], crop_size=16, flip=True)
    seen = {bool(torch.equal(flipped[(0, 0, p)]["gt"], uint8_to_tensor(expected[:, ::-1]))) for p in range(16)}
    assert seen == {True, False}  # OMGSR flips the resized faces too (RandomHorizontalFlip after the resize)


@pytest.mark.parametrize(("h", "w", "size"), [(70, 90, 16), (40, 52, 16), (12, 20, 16), (64, 200, 32), (16, 16, 16)],
                         ids=["box-twice", "box-once", "upscale", "wide", "exact"])
def test_center_mode_equals_the_released_center_crop_arr(tmp_path: Path, h: int, w: int, size: int) -> None:
    array = save(tmp_path / "img.png", h, w, seed=h * w)
    expected = released_center_crop_arr(Image.fromarray(array), size)
    assert expected.shape == (size, size, 3)
    assert torch.equal(resize_center_crop(uint8_to_tensor(array), size), uint8_to_tensor(expected))
    dataset = HQImageDataset(str(tmp_path), crop_size=size, crop="center", flip=False)  # one folder, as a string
    assert torch.equal(dataset[0]["gt"], uint8_to_tensor(expected))


def test_each_folder_keeps_its_own_mode(folders: Path) -> None:
    dataset = HQImageDataset([str(folders / "photos"), {"path": str(folders / "faces"), "crop": "resize"}],
                             crop_size=16, flip=False, crop="center")
    assert dataset.crops == ["center"] * 2 + ["resize"] * 6
    photo = np.asarray(Image.open(folders / "photos" / "p0.png"))
    assert torch.equal(dataset[0]["gt"], uint8_to_tensor(released_center_crop_arr(Image.fromarray(photo), 16)))
    random_mode = HQImageDataset(str(folders / "photos"), crop_size=16, flip=False)
    crops = {random_mode[(0, 0, p)]["gt"].sum().item() for p in range(6)}
    assert len(crops) > 1  # random windows differ by position; center and resize do not


def test_bad_folder_entries_are_clear(folders: Path) -> None:
    with pytest.raises(DataError, match="limit must be a positive integer"):
        folder_specs([{"path": "x", "limit": 0}], "random")
    with pytest.raises(DataError, match="unknown crop mode 'squash'"):
        folder_specs(["{path: x, crop: squash}"], "random")  # what the CLI hands over when the dict does not type
    with pytest.raises(DataError, match="needs `path`"):
        folder_specs([{"folder": "x"}], "random")
    with pytest.raises(DataError, match="unknown crop mode 'middle'"):
        HQImageDataset(None, crop="middle")
    assert folder_specs(str(folders), "center") == [TrainFolder(str(folders), "center", None)]


def test_single_folder_string_through_the_cli(folders: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--data.train_dirs /path`` (one folder, not a list) and a ``{path, crop, limit}`` entry parse and build the
    DataModule over the right files."""
    from onestep_sr.cli import cli_main

    monkeypatch.setattr(sys, "argv", ["main.py"])  # the arguments below are the whole command line

    base = ["--config", str(ROOT / "configs/demo/stage1.yaml"), "--data.num_workers", "0",  # run=False: no subcommand
            "--data.epoch_length", "2"]
    cli = cli_main([*base, "--data.train_dirs", str(folders / "faces")], run=False)
    dm = cli.datamodule
    assert dm.train_dirs == str(folders / "faces")
    dm.setup("fit")
    assert len(dm.train_dataset) == 6 and set(dm.train_dataset.crops) == {"random"}
    cli = cli_main([*base, "--data.train_dirs", f"[{folders / 'photos'}, {{path: {folders / 'faces'}, crop: resize, "
                                                f"limit: 4}}]"], run=False)
    dm = cli.datamodule
    dm.setup("fit")
    assert dm.train_dataset.crops == ["random"] * 2 + ["resize"] * 4
    assert isinstance(dm.train_dirs[1], TrainFolder) and dm.train_dirs[1].limit == 4


def test_real_tudsr_and_strsr_data_sections() -> None:
    """The real configs name the papers' folders: TUDSR LSDIR (random crops) + the first 10,000 FFHQ faces
    resized (SeeSR / OMGSR set-up), StrSR LSDIR + the first 60,000 Aesthetic-4K images, centre crops, no flips."""
    from parsed_configs import load_config  # each repository config parsed once per session

    for run in ("stage1", "stage2"):
        data = load_config(ROOT / f"configs/{run}.yaml")["data"]
        specs = folder_specs(data["train_dirs"], data.get("crop", "random"))
        assert [(Path(s.path).parts[:2], s.crop, s.limit) for s in specs] == [
            (("data", "LSDIR"), "random", None), (("data", "FFHQ"), "resize", 10000)]
        assert data.get("flip", True) is True
        assert data["degradation"]["init_args"]["preset"] == "light"
    for run in ("strsr_flux2", "strsr_zimage"):
        data = load_config(ROOT / f"configs/{run}.yaml")["data"]
        specs = folder_specs(data["train_dirs"], data.get("crop", "random"))
        assert [(Path(s.path).parts[:2], s.crop, s.limit) for s in specs] == [
            (("data", "LSDIR"), "center", None), (("data", "Aesthetic-4K"), "center", 60000)]
        assert data["flip"] is False and data["crop_size"] == 1024
        init = data["degradation"]["init_args"]
        assert init["preset"] == "realesrgan" and init["sharpen_gt"] is True and init.get("round_lq_up", True)


def test_sorted_limit_is_independent_of_the_file_system_order(tmp_path: Path) -> None:
    names = [f"{i:05d}.png" for i in range(12)]
    random.Random(0).shuffle(names)
    for name in names:  # written in a shuffled order
        save(tmp_path / name, 8, 8, seed=int(name[:5]))
    dataset = HQImageDataset([TrainFolder(str(tmp_path), limit=5)], crop_size=8)
    assert [Path(p).name for p in dataset.paths] == [f"{i:05d}.png" for i in range(5)]
    assert len(dataset) == 5
