"""What the before/after page (onestep_sr.web) refuses, and the message it shows, checked in this process; the page
itself runs in a browser in ``tests/test_web.py`` (slow set)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from onestep_sr.web import refusal


def test_an_image_within_the_limit_passes(tmp_path: Path) -> None:
    path = tmp_path / "ok.png"
    Image.new("RGB", (50, 40)).save(path)
    assert refusal(str(path), max_pixels=2000) is None  # exactly the limit: 50 x 40 = 2,000


def test_nothing_uploaded_and_not_an_image(tmp_path: Path) -> None:
    assert refusal(None, 100).startswith("Upload an image first")
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    assert refusal(str(notes), 100) == ("Refused: 'notes.png' is not an image file "
                                        "(expected PNG, JPEG, WebP, BMP or TIFF).")


def test_too_many_pixels_names_size_and_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 60)).save(path)
    assert refusal(str(path), 5999) == ("Refused: 'big.png' is too large: 100x60 = 6,000 pixels, the limit is 5,999 "
                                        "(--max-pixels).")


def test_a_decompression_bomb_is_refused_unopened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PIL refuses to open an image over twice its ``MAX_IMAGE_PIXELS``; the page says why instead of failing."""
    path = tmp_path / "bomb.png"
    Image.new("L", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4,096 > 2 x 1,000
    assert refusal(str(path), 10**9) == "Refused: 'bomb.png' is too large (over 1,000,000,000 pixels)."
