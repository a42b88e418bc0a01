"""Bad input for datamodules.images: every conversion and every failure names the file or folder."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.images import (
    BUNDLED_PHOTO_NAMES, BadImageError, DataError, bundled_photos, check_image, image_size, load_image, scan_images,
)


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def write_png16_rgb(path: Path, array: np.ndarray) -> None:
    """Hand-written 16-bit RGB PNG (Pillow cannot write one): filter 0 per row, big-endian samples."""
    h, w, _ = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(raw))
                     + _png_chunk(b"IEND", b""))


def test_scan_images_recursive_sorted_case_insensitive(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ["b.PNG", "a.jpg", "sub/c.JpEg", "sub/d.webp", "e.tif", "f.TIFF", "g.bmp", ".hidden.png"]:
        Image.new("RGB", (4, 4)).save(tmp_path / name, format="PNG")
    (tmp_path / "notes.txt").write_text("x")
    found = [p.relative_to(tmp_path).as_posix() for p in scan_images(tmp_path)]
    assert found == ["a.jpg", "b.PNG", "e.tif", "f.TIFF", "g.bmp", "sub/c.JpEg", "sub/d.webp"]
    top = [p.name for p in scan_images(tmp_path, recursive=False)]
    assert top == ["a.jpg", "b.PNG", "e.tif", "f.TIFF", "g.bmp"]


def test_missing_and_empty_folder_name_the_folder(tmp_path: Path) -> None:
    missing = tmp_path / "does_not_exist"
    with pytest.raises(DataError, match="does_not_exist"):
        scan_images(missing)
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="empty_dir"):
        scan_images(empty)


def test_rgb_png_exact_values(tmp_path: Path) -> None:
    array = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "x.png")
    image = load_image(tmp_path / "x.png")
    assert image.dtype == torch.float32 and image.shape == (3, 5, 7)
    torch.testing.assert_close(image, torch.from_numpy(array).permute(2, 0, 1).float() / 255)


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    image = load_image(tmp_path / "g.png")
    assert image.shape == (3, 3, 4)
    for c in range(3):
        torch.testing.assert_close(image[c], torch.from_numpy(gray).float() / 255)


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (200, 0, 0, 255)  # opaque red stays red
    rgba[0, 1] = (0, 0, 0, 0)  # fully transparent black -> white
    rgba[1, 0] = (0, 0, 0, 128)  # half black over white -> 255 * (1 - 128/255) = 127
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.shape == (3, 2, 2)
    torch.testing.assert_close(image[:, 0, 0], torch.tensor([200 / 255, 0.0, 0.0]))
    torch.testing.assert_close(image[:, 0, 1], torch.ones(3))
    torch.testing.assert_close(image[:, 1, 0], torch.full((3,), 127 / 255), atol=1.5 / 255, rtol=0)


def test_16bit_grayscale_png_scaled_by_65535(tmp_path: Path) -> None:
    gray = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    Image.fromarray(gray).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    image = load_image(tmp_path / "g16.png")
    assert image.shape == (3, 2, 2)
    assert image[0, 0, 1].item() == 1.0
    expected = torch.from_numpy(gray.astype(np.float32) / 65535)
    torch.testing.assert_close(image[1], expected)  # full 16-bit precision: 1000/65535, not a multiple of 1/255


def test_16bit_rgb_png(tmp_path: Path) -> None:
    array = np.zeros((2, 3, 3), np.uint16)
    array[0, 0] = 65535
    array[0, 1] = (32768, 0, 65535)
    write_png16_rgb(tmp_path / "rgb16.png", array)
    image = load_image(tmp_path / "rgb16.png")
    assert image.shape == (3, 2, 3)
    assert torch.equal(image[:, 0, 0], torch.ones(3))  # 65535 -> 1.0
    torch.testing.assert_close(image[:, 0, 1], torch.tensor([0.5, 0.0, 1.0]), atol=1 / 255, rtol=0)
    assert image[:, 1].abs().max().item() == 0.0


def test_palette_png_with_and_without_transparency(tmp_path: Path) -> None:
    palette_image = Image.new("P", (2, 1))
    palette_image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette_image.putpixel((0, 0), 0)
    palette_image.putpixel((1, 0), 1)
    palette_image.save(tmp_path / "p.png")
    image = load_image(tmp_path / "p.png")
    torch.testing.assert_close(image[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(image[:, 0, 1], torch.tensor([0.0, 0.0, 1.0]))
    palette_image.save(tmp_path / "pt.png", transparency=1)  # index 1 transparent -> white background
    image = load_image(tmp_path / "pt.png")
    torch.testing.assert_close(image[:, 0, 1], torch.ones(3))


def test_cmyk_jpeg_converted_to_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)  # pure red in CMYK
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    image = load_image(tmp_path / "c.jpg")
    assert image.shape == (3, 16, 16)
    torch.testing.assert_close(image.mean(dim=(1, 2)), torch.tensor([1.0, 0.0, 0.0]), atol=3 / 255, rtol=0)


def test_exif_orientation_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (6, 2), (10, 20, 30))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees: displayed as 2 wide, 6 high
    image.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").shape == (3, 6, 2)
    assert image_size(tmp_path / "r.jpg") == (6, 2)


@pytest.mark.parametrize("kind", ["zero_byte", "not_an_image", "truncated_png", "truncated_jpg", "garbage_png"])
def test_broken_files_raise_bad_image_error_naming_file(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / f"{kind}.{'jpg' if kind.endswith('jpg') else 'png'}"
    if kind == "zero_byte":
        path.write_bytes(b"")
    elif kind == "not_an_image":
        path.write_text("this is a text file with an image extension\n" * 10)
    elif kind == "garbage_png":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(200))
    else:
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, quality=90)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImageError, match=kind):
        load_image(path)
    with pytest.raises(BadImageError, match=kind):
        check_image(path)  # the cheap setup-time check catches it too


def test_huge_dimensions_refused_before_decoding(tmp_path: Path) -> None:
    Image.new("RGB", (120, 100)).save(tmp_path / "big.png")
    with pytest.raises(BadImageError, match=r"big\.png.*120x100"):
        load_image(tmp_path / "big.png", max_pixels=10_000)
    assert load_image(tmp_path / "big.png", max_pixels=12_000).shape == (3, 100, 120)
    # A header claiming 30000 x 30000 (900 MP): Pillow's own decompression-bomb error becomes a BadImageError.
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b""))
    with pytest.raises(BadImageError, match="bomb.png"):
        load_image(tmp_path / "bomb.png")


def test_bundled_photos_offline_fixed_order() -> None:
    photos = bundled_photos()
    assert [name for name, _ in photos] == list(BUNDLED_PHOTO_NAMES)
    assert len(photos) == 8
    for name, array in photos:
        assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3, name
        assert min(array.shape[:2]) >= 300, name
        assert array.std() > 10, name  # real photo content, not a blank
    assert photos[0][1].shape == (512, 512, 3)  # astronaut
    assert not np.array_equal(photos[1][1][:100, :100], photos[2][1][:100, :100])
