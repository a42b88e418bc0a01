"""Image files: folder scanning, robust decoding to RGB float tensors, and the photos bundled with scikit-image.

Every image leaves this module as a float32 tensor of shape (3, H, W) with values in [0, 1], RGB (DESIGN.md,
"Conventions"). Conversions:

- grayscale (``L``, ``1``) and other colour spaces (``YCbCr``, ``LAB``, ``HSV``, ``CMYK`` incl. CMYK JPEG): converted
  to RGB by Pillow;
- palette (``P``): expanded to RGB, or to RGBA when the palette carries transparency;
- alpha (``RGBA``, ``LA``, ``PA``): **composited on a white background** (a transparent logo becomes the logo on white,
  not the arbitrary colours hidden under alpha 0);
- 16-bit grayscale PNG/TIFF (``I;16*``, ``I``): read at full precision and divided by 65535 (65535 -> 1.0);
  16-bit RGB PNGs are reduced by Pillow to 8 bits per channel when decoded (then divided by 255, 65535 -> 1.0);
- float (``F``): clipped to [0, 1];
- EXIF orientation is applied, so paired LQ/GT files from cameras line up.

Unreadable files (zero bytes, not an image, corrupt or truncated data, dimensions above ``max_pixels``) raise
:class:`BadImageError` naming the file. Missing or empty folders raise :class:`DataError` naming the folder.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from models.errors import UserError

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_MAX_PIXELS: int = 100_000_000  # 100 MP; larger files are refused (memory guard)

# Bundled scikit-image photos that ship inside the wheel (no pooch download), in a fixed order.
BUNDLED_PHOTO_NAMES: tuple[str, ...] = (
    "astronaut", "chelsea", "coffee", "rocket",
    "immunohistochemistry", "hubble_deep_field", "motorcycle", "retina",
)
_WHITE = 255


class DataError(UserError, ValueError):
    """A data folder or data set is unusable (missing, empty, mismatched pairs, wrong sizes)."""


class BadImageError(DataError):
    """One image file cannot be decoded (corrupt, truncated, empty, not an image, or too large)."""


def scan_images(folder: str | os.PathLike[str], recursive: bool = True) -> list[Path]:
    """Sorted image files under ``folder`` (extensions in :data:`IMAGE_EXTENSIONS`, case-insensitive).

    Hidden files (names starting with ``.``, e.g. macOS ``._x.jpg`` resource forks) are ignored. Raises
    :class:`DataError` naming the folder when it does not exist, is not a directory or holds no image.
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise DataError(f"Image folder does not exist: '{root}'")
    if not root.is_dir():
        raise DataError(f"Image folder is not a directory: '{root}'")
    candidates = root.rglob("*") if recursive else root.iterdir()
    files = sorted(
        p for p in candidates
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )
    if not files:
        raise DataError(
            f"No images found in folder '{root}' ({'recursive' if recursive else 'top level only'}; "
            f"extensions {', '.join(IMAGE_EXTENSIONS)})"
        )
    return files


def _open_checked(path: Path, max_pixels: int) -> Image.Image:
    """Open (lazily, header only) and enforce the size guard. Raises BadImageError."""
    if not path.is_file():
        raise BadImageError(f"Image file does not exist: '{path}'")
    if path.stat().st_size == 0:
        raise BadImageError(f"Image file is empty (0 bytes): '{path}'")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as err:
        raise BadImageError(f"Image '{path}' is too large to decode safely ({err})") from err
    except Exception as err:  # UnidentifiedImageError, OSError, SyntaxError, ... from the format plugins
        raise BadImageError(f"Cannot read image '{path}': {type(err).__name__}: {err}") from err
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise BadImageError(
            f"Image '{path}' is too large: {width}x{height} = {width * height} pixels > max_pixels={max_pixels}"
        )
    if width == 0 or height == 0:
        image.close()
        raise BadImageError(f"Image '{path}' has zero size ({width}x{height})")
    return image


def image_size(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(height, width) of the image as :func:`load_image` returns it (EXIF rotation applied), from the header only."""
    with _open_checked(Path(path), max_pixels) as image:
        width, height = image.size
        orientation = image.getexif().get(0x0112, 1)
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def check_image(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Cheap validity check without a full decode; raises :class:`BadImageError` naming the file.

    Catches empty, non-image, oversized and corrupt files (Pillow ``verify``: chunk CRCs and truncation for PNG).
    JPEGs whose data does not end with the EOI marker are fully decoded to find truncation.
    """
    path = Path(path)
    with _open_checked(path, max_pixels) as image:
        fmt = image.format
        try:
            image.verify()
        except Exception as err:
            raise BadImageError(f"Corrupt image '{path}': {type(err).__name__}: {err}") from err
    if fmt == "JPEG":
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 64))
            tail = handle.read().rstrip(b"\x00")
        if not tail.endswith(b"\xff\xd9"):
            load_image(path, max_pixels)  # decodes fully; raises BadImageError when truncated


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """Pillow image of any mode -> (H, W, 3) float32 in [0, 1]."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        gray = np.asarray(image, dtype=np.float32) / 65535.0  # (H, W) 16-bit range
        return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=2)
    if mode == "F":
        gray = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "PA", "La", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, (_WHITE, _WHITE, _WHITE, 255))
        image = Image.alpha_composite(background, image)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3)


def load_image(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Decode ``path`` to a float32 tensor (3, H, W) in [0, 1], RGB (conversions: see the module docstring).

    Raises :class:`BadImageError` naming the file for empty, non-image, corrupt or truncated files and for images
    with more than ``max_pixels`` pixels (checked from the header before decoding).
    """
    path = Path(path)
    with _open_checked(path, max_pixels) as image:
        try:
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = _to_rgb_array(image)  # (H, W, 3)
        except BadImageError:
            raise
        except Exception as err:  # truncated data, broken codec streams, unsupported modes
            raise BadImageError(f"Cannot decode image '{path}': {type(err).__name__}: {err}") from err
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))  # (3, H, W)


def uint8_to_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float() / 255.0


def tensor_to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounded to nearest."""
    return (image.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


@functools.lru_cache(maxsize=1)
def _bundled_cached() -> tuple[tuple[str, np.ndarray], ...]:
    import skimage.data as data  # local import: scikit-image is only needed for the bundled photos

    loaders = {
        "astronaut": data.astronaut, "chelsea": data.chelsea, "coffee": data.coffee, "rocket": data.rocket,
        "immunohistochemistry": data.immunohistochemistry, "hubble_deep_field": data.hubble_deep_field,
        "motorcycle": lambda: data.stereo_motorcycle()[0], "retina": data.retina,
    }
    photos = []
    for name in BUNDLED_PHOTO_NAMES:
        array = np.ascontiguousarray(loaders[name]()[..., :3], dtype=np.uint8)  # (H, W, 3)
        array.flags.writeable = False
        photos.append((name, array))
    return tuple(photos)


def bundled_photos() -> list[tuple[str, np.ndarray]]:
    """The real RGB photos shipped inside scikit-image (no download), as ``(name, (H, W, 3) uint8)``.

    Order is fixed (:data:`BUNDLED_PHOTO_NAMES`): astronaut 512x512, chelsea 300x451, coffee 400x600, rocket
    427x640, immunohistochemistry 512x512, hubble_deep_field 872x1000, motorcycle (stereo left) 500x741,
    retina 1411x1411. Arrays are read-only and shared between calls.
    """
    return list(_bundled_cached())


def bundled_photo_tensors(names: Sequence[str] | None = None) -> list[tuple[str, torch.Tensor]]:
    """:func:`bundled_photos` as (3, H, W) float tensors, optionally restricted to ``names``."""
    return [(n, uint8_to_tensor(a)) for n, a in bundled_photos() if names is None or n in names]
