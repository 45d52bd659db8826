"""Robust image decoding: every odd mode (palette, RGBA, CMYK, 16-bit, EXIF-rotated) becomes RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from lmmreg.errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# What PIL may find inside those files; anything else (e.g. a PSD renamed .jpg) is refused by name.
DECODABLE_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "GIF", "WEBP", "TIFF")


class BadImageError(InputError):
    """An image that cannot be used; the message starts with its path."""


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB the way a viewer would show it."""
    img = ImageOps.exif_transpose(img)  # honour the camera's orientation tag
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / float greyscale: scale to 8 bits instead of clipping to white
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size and arr.max() > 0 else 1.0
        img = Image.fromarray((arr / hi * 255.0).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def check_nonempty_file(path: Path) -> None:
    """Missing and zero-byte files fail first, with a reason a decoder would not give."""
    if not path.is_file():
        raise BadImageError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise BadImageError(f"{path}: zero-byte file")


def check_pixels(path: Path, w: int, h: int, *, max_pixels: int | None, what: str = "") -> None:
    """Refuse oversized images (or video frames) before decoding them, instead of exhausting memory."""
    if max_pixels is not None and w * h > max_pixels:
        raise BadImageError(f"{path}: {w}x{h} = {w * h} pixels{what} exceeds the limit {max_pixels} "
                            "(prepare.max_image_pixels)")


def load_rgb(path: str | Path, *, max_pixels: int | None = None) -> Image.Image:
    """Open, fully decode and convert one image, raising :class:`BadImageError` naming the file."""
    path = Path(path)
    try:
        check_nonempty_file(path)
        with Image.open(path) as img:
            check_pixels(path, *img.size, max_pixels=max_pixels)
            if img.format not in DECODABLE_FORMATS:
                raise BadImageError(f"{path}: unsupported format {img.format} (supported: {DECODABLE_FORMATS})")
            img.load()  # decode now so truncation shows up here, not in a worker later
            return to_rgb(img)
    except BadImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImageError(f"{path}: cannot decode ({type(e).__name__}: {e})") from e


def is_supported(path: str | Path) -> bool:
    """True for the image file extensions `prepare` accepts (the content is checked on decoding)."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)
