"""Reading user images safely: pixel limits before decoding, high bit depths scaled, masks binarised.

Rules (README, *Reliability*):
- **Pixel limit.** An image larger than `max_pixels` (default `MAX_IMAGE_PIXELS`, 40 MP —
  SocioSeg tiles are 0.6 MP) is refused from its header, before any pixel is decoded, so a
  48 KB PNG that claims 20000² cannot allocate gigabytes. `--max-image-pixels` raises it.
- **Shape.** Sides of at least `MIN_SIDE` px and an aspect ratio of at most `MAX_ASPECT_RATIO`
  (Qwen's `smart_resize` refuses more than 200:1).
- **Colour.** Images are RGB with 8 bits per channel. High-bit-depth images (16-bit PNG or TIFF,
  32-bit integer or float) are stretched linearly from their own minimum–maximum to 0–255 (the
  rule `geo.read_image` applies to GeoTIFFs), never clipped to white as PIL's `convert("RGB")`
  does. A palette or grey image becomes RGB; an alpha channel is dropped.
- **Masks.** Foreground is any nonzero value (0/1, 0/255, 0/65535 and instance-id masks read
  alike); colour masks use their brightest channel. A mask whose colour channels are constant
  but whose alpha varies is an alpha-encoded mask: its alpha channel is the mask. Lossy (JPEG)
  masks are refused (`check_mask_format`): their compression noise around every edge would be
  foreground.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_IMAGE_PIXELS = 40_000_000
MIN_SIDE = 8
MAX_ASPECT_RATIO = 200
LOSSY_FORMATS = ("JPEG", "MPO")


class ImageLimitError(ValueError):
    """An image refused before decoding (too many pixels, too thin); the message names it."""


def check_size(width: int, height: int, where: str, max_pixels: int | None = MAX_IMAGE_PIXELS) -> None:
    """Refuse sizes the pipeline cannot (or should not) handle, from the header alone."""
    if max_pixels is not None and width * height > max_pixels:
        raise ImageLimitError(f"{where}: {width}x{height} is {width * height:,} pixels, above the limit of "
                              f"{max_pixels:,} (raise it with --max-image-pixels)")
    if min(width, height) < MIN_SIDE:
        raise ImageLimitError(f"{where}: {width}x{height}; each side must be at least {MIN_SIDE} px")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageLimitError(f"{where}: {width}x{height}; the aspect ratio must be at most {MAX_ASPECT_RATIO}:1")


def open_image(source, where: str, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open (path, bytes, or a `datasets` image dict), check its size from the header, then decode it."""
    if isinstance(source, Image.Image):
        check_size(*source.size, where, max_pixels)
        return source
    if isinstance(source, dict):
        if source.get("bytes") is not None:
            source = source["bytes"]
        elif source.get("path"):
            source = source["path"]
        else:
            raise ValueError(f"{where}: empty image field")
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    # PIL's own bomb guard warns, then raises, at fixed sizes; ours (above) is the one that applies
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        image = Image.open(source)
        check_size(*image.size, where, max_pixels)
        image.load()
    except FileNotFoundError as err:
        raise ValueError(f"{where}: file not found") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{where}: unreadable image ({type(err).__name__}: {err})") from err
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return image


def stretch_to_uint8(array: np.ndarray) -> np.ndarray:
    """A high-bit-depth array stretched linearly from its own min..max to 0..255."""
    array = array.astype(np.float64)
    finite = np.isfinite(array)
    if not finite.any():
        return np.zeros(array.shape, np.uint8)
    lo, hi = float(array[finite].min()), float(array[finite].max())
    scaled = (np.where(finite, array, lo) - lo) / max(hi - lo, 1e-12) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB, scaling high bit depths instead of saturating them (module docstring)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        grey = stretch_to_uint8(np.asarray(image))
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=2), mode="RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
    return image.convert("RGB")


def mask_array(image) -> np.ndarray:
    """A mask image (PIL, any mode, or an array) as a boolean array (module docstring for the rule)."""
    if isinstance(image, Image.Image) and image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    array = np.asarray(image)
    if array.ndim == 3:
        channels = array.shape[2]
        colour = array[..., : min(3, channels)] if channels in (3, 4) else array[..., :1]
        alpha = array[..., -1] if channels in (2, 4) else None
        if alpha is not None and colour.min() == colour.max() and alpha.min() != alpha.max():
            array = alpha
        else:
            array = colour.max(axis=-1)
    return array != 0


def check_mask_format(image: Image.Image, where: str) -> None:
    if image.format in LOSSY_FORMATS:
        raise ValueError(f"{where}: a {image.format} mask; masks must be lossless (PNG/TIFF): compression noise "
                         "would be read as foreground")
