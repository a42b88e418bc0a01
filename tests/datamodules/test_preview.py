"""Preview tool: files written, sizes, grid layout, byte-identical reruns, --input folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.preview import main, make_grid


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_preview_twice_is_byte_identical(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--n", "3", "--seed", "0", "--crop", "64", "--preset", "light"]
    assert main(["--out", str(tmp_path / "a"), *args]) == 0
    printed = capsys.readouterr().out
    assert main(["--out", str(tmp_path / "b"), *args]) == 0
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    expected = [f"pair_{i:03d}_{t}.png" for i in range(3) for t in ("hq", "lq")] + ["grid.png"]
    assert sorted(first) == sorted(expected)
    assert first == second  # same seed -> same bytes
    for name in expected:
        assert str(tmp_path / "a" / name) in printed
    lq = Image.open(tmp_path / "a" / "pair_000_lq.png")
    hq = Image.open(tmp_path / "a" / "pair_000_hq.png")
    assert (lq.mode, lq.size, hq.size) == ("RGB", (16, 16), (64, 64))
    assert Image.open(tmp_path / "a" / "grid.png").size == (2 * (2 * 64 + 8) + 8, 2 * 64 + 8)  # 2 pairs per row
    main(["--out", str(tmp_path / "c"), "--n", "3", "--seed", "1", "--crop", "64"])
    assert _files(tmp_path / "c")["pair_000_lq.png"] != first["pair_000_lq.png"]


def test_preview_from_input_folder(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    array = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(array).save(folder / "one.png")
    assert main(["--out", str(tmp_path / "out"), "--input", str(folder), "--n", "2", "--crop", "32", "--scale", "2"]) == 0
    assert Image.open(tmp_path / "out" / "pair_001_lq.png").size == (16, 16)
    with pytest.raises(SystemExit, match="2"):
        main(["--out", str(tmp_path / "x"), "--input", str(tmp_path / "missing")])


def test_grid_places_bicubic_lq_beside_hq() -> None:
    hq = torch.rand(1, 3, 8, 8)
    lq = torch.full((1, 3, 2, 2), 0.5)
    grid = make_grid(lq, hq)
    assert grid.shape == (8, 2 * 8 + 8, 3)
    assert (grid[:, :8] == 128).all()  # constant LQ upsamples to a constant tile
    assert (grid[:, 8:16] == 255).all()  # white gap
    expected_hq = (hq[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(grid[:, 16:], expected_hq)
