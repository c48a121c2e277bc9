"""Reading arbitrary image files into RGB ``uint8`` arrays, with one clear reason when that is impossible.

Everything a folder of real photos can hold is turned into plain RGB: EXIF orientation is applied;
grayscale, palette, CMYK, YCbCr and LAB are converted; transparency (RGBA, LA, PA, a palette or
grayscale with a transparent colour) is composited on white; 16-bit and 32-bit integer images are
scaled to 8 bits by their bit depth. What cannot be read (missing, unreadable, not an image, corrupt or
truncated, too small, too large) raises `ImageReadError` with a one-line reason; no other exception
escapes `read_image` for a bad file.

Example:
    >>> rgb = read_image("photo.jpg")   # (H, W, 3) uint8  # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_SIDE",
    "PHOTO_EXTENSIONS",
    "ImageReadError",
    "image_extensions",
    "read_image",
]

#: Largest image decoded, in pixels (width x height); bigger files are refused before decoding.
DEFAULT_MAX_PIXELS = 100_000_000
#: Smallest accepted side in pixels; a smaller image has too few patches to cut meaningfully.
DEFAULT_MIN_SIDE = 32


class ImageReadError(Exception):
    """A file that cannot be turned into an RGB image; ``str(err)`` is the one-line reason."""


#: Raster photo formats looked for in folders (only those the installed Pillow can open are used).
PHOTO_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .apng .bmp .dib .gif .tif .tiff .webp .ppm .pgm .pbm .pnm .tga .jp2 .j2k "
    ".jpx .avif .qoi .sgi .pcx .psd".split()
)


def image_extensions() -> frozenset[str]:
    """Photo extensions (lower case, with the dot) that the installed Pillow opens: ``.jpg``, ``.png`` ..."""
    Image.init()
    readable = {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    return PHOTO_EXTENSIONS & readable


def _check_path(path: Path) -> None:
    if path.is_symlink() and not path.exists():
        raise ImageReadError(f"broken symbolic link (its target {os.readlink(path)!r} does not exist)")
    if not path.exists():
        raise ImageReadError("no such file")
    if not path.is_file():
        raise ImageReadError("not a regular file")
    if not os.access(path, os.R_OK):
        raise ImageReadError("permission denied (the file is not readable)")


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> ``RGB``; transparency composited on white, high bit depths scaled to 8 bits."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im)
        if im.mode == "F":
            hi = float(np.nanmax(arr)) if arr.size else 1.0
            scale = 255.0 / (hi if hi > 1.0 else 1.0)
        else:
            sixteen = im.mode.startswith("I;16") or arr.max(initial=0) <= 65535
            scale = 255.0 / (65535.0 if sixteen else 2**32 - 1)
        gray = np.clip(np.nan_to_num(arr.astype(np.float64)) * scale + 0.5, 0, 255).astype(np.uint8)
        im = Image.fromarray(gray, mode="L")
    if im.mode == "P" or (im.mode in ("L", "RGB") and "transparency" in im.info):
        im = im.convert("RGBA")
    if im.mode in ("LA", "PA", "La"):
        im = im.convert("RGBA")
    if im.mode == "RGBa":
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, im).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def read_image(
    path: str | os.PathLike,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    exif_orientation: bool = True,
) -> np.ndarray:
    """Decode ``path`` into an ``(H, W, 3)`` ``uint8`` RGB array, upright (EXIF orientation applied).

    Args:
        path: image file (any format Pillow opens; the extension is not trusted).
        max_pixels: refuse images with more than this many pixels before decoding them (``None``: no cap;
            Pillow's own decompression-bomb limit is replaced by this one).
        min_side: refuse images whose shorter side is below this many pixels.
        exif_orientation: turn the image upright by its EXIF orientation tag; dataset readers pass False,
            because their label maps are aligned with the pixels as stored.

    Raises:
        ImageReadError: with a one-line reason, for every kind of bad file.
    """
    path = Path(path)
    _check_path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our own cap below
            try:
                im = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
            with im:
                width, height = im.size
                if max_pixels is not None and width * height > max_pixels:
                    raise ImageReadError(
                        f"image too large: {width}x{height} = {width * height / 1e6:.1f} MP, over the cap of "
                        f"{max_pixels / 1e6:.1f} MP; raise it with --max-pixels or downscale the file"
                    )
                im.load()
                if exif_orientation:
                    im = ImageOps.exif_transpose(im)
                rgb = np.array(_to_rgb(im), dtype=np.uint8)  # a writable copy
    except ImageReadError:
        raise
    except PermissionError:
        raise ImageReadError("permission denied (the file is not readable)") from None
    except UnidentifiedImageError:
        raise ImageReadError("not an image, or a format Pillow cannot read") from None
    except Image.DecompressionBombError as err:  # pragma: no cover - MAX_IMAGE_PIXELS is lifted above
        raise ImageReadError(f"image too large: {err}") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, IndexError, TypeError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ImageReadError(f"corrupt or truncated image ({detail})") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3:  # pragma: no cover - _to_rgb always gives RGB
        raise ImageReadError(f"could not convert to RGB, got array of shape {rgb.shape}")
    if min(rgb.shape[:2]) < min_side:
        raise ImageReadError(
            f"image too small: {rgb.shape[1]}x{rgb.shape[0]} pixels, need at least {min_side} on each side "
            f"(--min-side)"
        )
    return rgb
