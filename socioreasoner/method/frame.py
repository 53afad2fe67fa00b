"""The Qwen coordinate frames: images resized once with Qwen's `smart_resize`, and the units the model's
coordinates are written in.

Every image the model sees is resized to a multiple of patch × merge (Qwen2.5-VL: 14 × 2 = 28;
Qwen3-VL and Qwen3.5: 16 × 2 = 32). The model's coordinates are then either

- `absolute` (Qwen2.5-VL): pixels of that resized image, or
- `relative1000` (Qwen3-VL, Qwen3.5): 0–1000 across the image, whatever its size
  (x_pixels = x / 1000 × width).

SAM2 and the metrics work in the original image frame. `QwenFrame` holds both sizes and the unit, and
maps boxes and points between model coordinates, resized pixels (where drafts are drawn) and the original
frame.

Defaults are the reference code's *effective* bounds (min 56², max 768²), under which
SocioSeg's 768×768 images become 756×756 (Qwen2.5-VL; 768×768 with Qwen3-VL's factor 32).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

QWEN_FACTOR = 28  # Qwen2.5-VL: patch 14 × spatial merge 2
DEFAULT_MIN_PIXELS = 56 * 56
DEFAULT_MAX_PIXELS = 768 * 768
ABSOLUTE, RELATIVE1000 = "absolute", "relative1000"
COORD_FRAMES = (ABSOLUTE, RELATIVE1000)
RELATIVE_EXTENT = 1000


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen's own `smart_resize` (transformers'), imported on first use: importing it loads torch, and this layer
    (`socioreasoner.method`) imports neither torch nor TRL."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as qwen_smart_resize

    return qwen_smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)


def check_coord_frame(value: str, name: str = "coord_frame") -> str:
    """`value` if it names a coordinate frame, else a one-line ValueError naming `name`."""
    if value not in COORD_FRAMES:
        raise ValueError(f"{name} {value!r}: expected one of {COORD_FRAMES}")
    return value


@dataclass(frozen=True)
class QwenFrame:
    """Original (width, height), resized (width, height) of one image, and the unit of model coordinates."""

    orig_w: int
    orig_h: int
    w: int
    h: int
    coords: str = ABSOLUTE

    def __post_init__(self):
        check_coord_frame(self.coords, "QwenFrame.coords")

    @classmethod
    def for_size(cls, width: int, height: int, min_pixels: int = DEFAULT_MIN_PIXELS,
                 max_pixels: int = DEFAULT_MAX_PIXELS, factor: int = QWEN_FACTOR, coords: str = ABSOLUTE) -> QwenFrame:
        h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
        return cls(orig_w=width, orig_h=height, w=w, h=h, coords=coords)

    @property
    def coord_w(self) -> int:
        """Model coordinate units across the image (the resized width, or 1000)."""
        return self.w if self.coords == ABSOLUTE else RELATIVE_EXTENT

    @property
    def coord_h(self) -> int:
        return self.h if self.coords == ABSOLUTE else RELATIVE_EXTENT

    @property
    def scale_x(self) -> float:
        """Original pixels per model unit along x."""
        return self.orig_w / self.coord_w

    @property
    def scale_y(self) -> float:
        return self.orig_h / self.coord_h

    @property
    def pixels_per_unit(self) -> tuple[float, float]:
        """Resized-image pixels per model unit (x, y): 1 for absolute frames."""
        return self.w / self.coord_w, self.h / self.coord_h

    def resize(self, image: Image.Image) -> Image.Image:
        """The image in the Qwen frame (bicubic, as Qwen's processor resamples)."""
        if image.size != (self.orig_w, self.orig_h):
            raise ValueError(f"image is {image.size[0]}x{image.size[1]}, frame expects {self.orig_w}x{self.orig_h}")
        if image.size == (self.w, self.h):
            return image
        return image.resize((self.w, self.h), Image.BICUBIC)

    # model coordinates <-> original pixels (SAM2, masks, metrics)
    def box_to_original(self, box) -> list[float]:
        x1, y1, x2, y2 = box
        return self._clip_box([x1 * self.scale_x, y1 * self.scale_y, x2 * self.scale_x, y2 * self.scale_y],
                              self.orig_w, self.orig_h)

    def box_to_model(self, box) -> list[float]:
        x1, y1, x2, y2 = box
        return self._clip_box([x1 / self.scale_x, y1 / self.scale_y, x2 / self.scale_x, y2 / self.scale_y],
                              self.coord_w, self.coord_h)

    def point_to_original(self, point) -> list[float]:
        x, y = point
        return [float(np.clip(x * self.scale_x, 0, self.orig_w - 1)), float(np.clip(y * self.scale_y, 0, self.orig_h - 1))]

    def point_to_model(self, point) -> list[float]:
        x, y = point
        return [float(np.clip(x / self.scale_x, 0, self.coord_w - 1)),
                float(np.clip(y / self.scale_y, 0, self.coord_h - 1))]

    # model coordinates <-> resized pixels (drafts are drawn on the resized images; SFT targets are made there)
    def box_to_pixels(self, box) -> list[float]:
        """A model-frame box in resized-image pixels; values as they are for absolute frames (the reference draws
        the raw answer), scaled otherwise (no clipping: the renderer draws what PIL can)."""
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
        if self.coords == ABSOLUTE or not numeric:
            return box
        px, py = self.pixels_per_unit
        return [box[0] * px, box[1] * py, box[2] * px, box[3] * py]

    def pixels_to_model(self, xy: list[float]) -> list[int]:
        """Resized-image pixel coordinates [x, y, x, y, …] as integer model coordinates (SFT targets)."""
        if self.coords == ABSOLUTE:
            return [int(round(v)) for v in xy]
        px, py = self.pixels_per_unit
        upper = (self.coord_w - 1, self.coord_h - 1)
        return [int(min(upper[i % 2], max(0, round(v / (px if i % 2 == 0 else py))))) for i, v in enumerate(xy)]

    @staticmethod
    def _clip_box(box, width: int, height: int) -> list[float]:
        x1, y1, x2, y2 = (float(v) for v in box)
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        return [float(np.clip(x1, 0, width - 1)), float(np.clip(y1, 0, height - 1)),
                float(np.clip(x2, 0, width - 1)), float(np.clip(y2, 0, height - 1))]
