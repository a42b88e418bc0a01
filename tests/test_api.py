"""The Python API (onestep_sr.api.Upscaler) on the demo predict config with random weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEMO_X4 = ROOT / "configs/demo/predict_x4.yaml"
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory, demo_exports) -> Path:
    """A folder holding the demo chains' exported adapters (conftest ``demo_exports``)."""
    return demo_exports(tmp_path_factory.mktemp("api"))


@pytest.fixture(scope="module")
def upscaler(demo_dir: Path):
    from onestep_sr import Upscaler

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(demo_dir)
        return Upscaler.from_config(DEMO_X4)


def _photo(h: int = 13, w: int = 11) -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[100:100 + h, 200:200 + w])  # (h, w, 3) uint8


def test_pil_numpy_tensor_keep_their_kind_and_size(upscaler) -> None:
    photo = _photo()
    sr = upscaler(Image.fromarray(photo))
    assert isinstance(sr, Image.Image) and sr.mode == "RGB" and sr.size == (44, 52)
    out = upscaler(photo)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == (52, 44, 3)
    np.testing.assert_array_equal(np.asarray(sr), out)
    f = upscaler(photo.astype(np.float32) / 255)
    assert f.dtype == np.float32 and f.shape == (52, 44, 3) and 0 <= f.min() and f.max() <= 1
    assert np.abs(f * 255 - out.astype(np.float32)).max() <= 0.5 + 1e-3  # uint8 rounding of the same result
    t = torch.from_numpy(photo).permute(2, 0, 1).double() / 255
    st = upscaler(t)
    assert st.shape == (3, 52, 44) and st.dtype == torch.float64
    sb = upscaler(torch.stack([t, t.flip(-1)]).float())
    assert sb.shape == (2, 3, 52, 44) and sb.dtype == torch.float32
    torch.testing.assert_close(sb[0].double(), st, atol=1e-4, rtol=0)  # batched float32 sums


def test_bad_inputs_name_what_is_expected(upscaler) -> None:
    from onestep_sr.api import InputError

    for bad in (np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3), np.int32),
                torch.zeros(1, 8, 8), torch.zeros(3, 8, 8, dtype=torch.uint8), "photo.jpg"):
        with pytest.raises(InputError, match=r"expected a PIL image, a numpy array \(H, W, 3\)"):
            upscaler(bad)


def test_equals_what_predict_writes(upscaler, demo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from onestep_sr.cli import cli_main

    monkeypatch.chdir(demo_dir)
    (demo_dir / "photos").mkdir()
    photo = _photo(15, 9)
    Image.fromarray(photo).save(demo_dir / "photos/a.png")
    cli_main(["predict", "--config", str(DEMO_X4), "--data.predict_dir", "photos", "--writer.output_dir", "out",
              "--trainer.enable_progress_bar", "false"])
    written = np.asarray(Image.open(demo_dir / "out/a.png").convert("RGB")).astype(int)
    mine = upscaler(photo).astype(int)
    assert mine.shape == written.shape == (60, 36, 3)
    assert np.abs(mine - written).max() <= 1


def test_x8_overrides_and_missing_weights(demo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models.errors import UserError
    from onestep_sr import Upscaler

    monkeypatch.chdir(demo_dir)
    up8 = Upscaler.from_config(DEMO_X4, scale=8)
    assert up8.scale == 8 and up8(Image.fromarray(_photo(5, 7))).size == (56, 40)
    stage1 = {"model.init_args.adapter2": None, "model.init_args.pipeline": {"init_args": {"adapter2": None}}}
    up2 = Upscaler.from_config(DEMO_X4, overrides=stage1)
    assert up2.scale == 2 and up2(_photo(5, 7)).shape == (10, 14, 3)
    with pytest.raises(UserError, match="scale=3 is not available"):
        Upscaler.from_config(DEMO_X4, scale=3)
    with pytest.raises(UserError, match="adapter"):
        Upscaler.from_config(DEMO_X4, overrides=["--model.init_args.adapter1", "missing.safetensors"])


def test_strsr_demo_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_exports) -> None:
    """StrSR through the API: the generator-only demo config with the export of the demo StrSR generator."""
    from models.errors import UserError
    from onestep_sr import Upscaler
    monkeypatch.chdir(demo_exports(tmp_path))  # the demo StrSR generator's export where the config looks for it
    demo = ROOT / "configs/demo/predict_strsr_flux2.yaml"
    up = Upscaler.from_config(demo, overrides={"model.init_args.latents": "mode"})  # deterministic
    photo = _photo()
    sr = up(Image.fromarray(photo))
    assert up.scale == 4 and isinstance(sr, Image.Image) and sr.size == (44, 52)
    np.testing.assert_array_equal(np.asarray(sr), up(photo))
    with pytest.raises(UserError, match="StrSR weights"):
        Upscaler.from_config(demo, overrides=["--model.init_args.weights", "missing/StrSR-flux"])
